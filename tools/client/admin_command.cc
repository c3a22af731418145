#include "tools/client/admin_command.h"

#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tools/client/ab_stats.h"
#include "vitq/v1/classifier.grpc.pb.h"

namespace vitq::client {
namespace {

using vitq::v1::Admin;

absl::StatusOr<std::string> AdminToken(const std::string& token_file) {
  if (!token_file.empty()) {
    absl::StatusOr<std::string> text = ReadFileBytes(token_file);
    if (!text.ok()) return text.status();
    std::string token(absl::StripAsciiWhitespace(*text));
    if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(token_file, " is empty"));
    return token;
  }
  const char* env = std::getenv("VITQ_ADMIN_TOKEN");
  if (env && *env) return std::string(absl::StripAsciiWhitespace(env));
  return absl::InvalidArgumentError("no admin token: give --token-file or set VITQ_ADMIN_TOKEN");
}

// A connected Admin stub and the token every call carries.
struct AdminClient {
  std::unique_ptr<Admin::Stub> stub;
  std::string token;
  int64_t timeout_ms = 0;

  void Prepare(grpc::ClientContext* context) const {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
    SetTimeout(timeout_ms, context);
  }
};

absl::StatusOr<AdminClient> ConnectAdmin(const AdminFlags& flags) {
  absl::StatusOr<std::string> token = AdminToken(flags.token_file);
  if (!token.ok()) return token.status();
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect(flags.connection);
  if (!channel.ok()) return channel.status();
  return AdminClient{Admin::NewStub(*channel), *token, flags.timeout_ms};
}

int PrintJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) {
    return Fail(absl::InternalError("cannot print the response as JSON"));
  }
  std::fputs(json.c_str(), stdout);
  return kExitOk;
}

std::string Percent(double fraction) { return absl::StrFormat("%.1f%%", 100 * fraction); }

std::string RoutingText(const vitq::v1::RoutingTable& t) {
  double total = 0;
  for (const auto& [name, w] : t.weights()) total += w;
  std::map<std::string, double> sorted(t.weights().begin(), t.weights().end());
  std::vector<std::string> parts;
  for (const auto& [name, w] : sorted)
    parts.push_back(absl::StrCat(name, " ", Percent(total > 0 ? w / total : 0)));
  std::string out =
      absl::StrCat(t.model(), " generation ", t.generation(), ": ", absl::StrJoin(parts, ", "));
  if (!t.shadow_variant().empty()) {
    absl::StrAppend(&out, "; shadow ", Percent(t.shadow_fraction()), " to ", t.shadow_variant());
  }
  return out + "\n";
}

std::string VariantText(const vitq::v1::VariantInfo& v) {
  return absl::StrFormat("  %-10s %7s  %-6s %-6s %8.2f MB  %s%s\n", v.variant(),
                         Percent(v.weight()), v.precision(), v.arch(), v.weight_bytes() / 1048576.0,
                         v.artifact(), v.shadow() ? "  (shadow reference)" : "");
}

std::string StatsText(const vitq::v1::StatsResponse& s) {
  std::string out = absl::StrFormat(
      "%s (reference: %s)\n  %-10s %6s %9s %7s %8s %8s %8s %9s %9s %9s\n", s.model(),
      s.reference_variant().empty() ? "none" : s.reference_variant(), "variant", "share",
      "requests", "errors", "p50 ms", "p99 ms", "req/s", "labeled", "correct", "compared");
  for (const auto& v : s.variants()) {
    absl::StrAppendFormat(&out, "  %-10s %6s %9d %7d %8.2f %8.2f %8.1f %9d %9d %9d\n", v.variant(),
                          Percent(v.weight()), v.requests(), v.errors(), v.p50_ms(), v.p99_ms(),
                          v.throughput_rps(), v.labeled(), v.labeled_correct(),
                          v.shadow_compared());
  }
  return out;
}

// Runs one unary admin call and prints its response (JSON or `text`).
template <typename Request, typename Response>
int Call(const AdminFlags& flags,
         grpc::Status (Admin::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
         const Request& request, const std::function<std::string(const Response&)>& text) {
  absl::StatusOr<AdminClient> client = ConnectAdmin(flags);
  if (!client.ok()) return Fail(client.status());
  grpc::ClientContext context;
  client->Prepare(&context);
  Response response;
  const grpc::Status status = ((*client->stub).*method)(&context, request, &response);
  if (!status.ok()) return Fail(ToAbslStatus(status));
  if (flags.json) return PrintJson(response);
  std::fputs(text(response).c_str(), stdout);
  return kExitOk;
}

int ListModels(const AdminFlags& flags) {
  return Call<vitq::v1::ListModelsRequest, vitq::v1::ListModelsResponse>(
      flags, &Admin::Stub::ListModels, {}, [](const vitq::v1::ListModelsResponse& r) {
        std::string out;
        for (const auto& m : r.models()) {
          out += RoutingText(m.routing());
          for (const auto& v : m.variants()) out += VariantText(v);
        }
        return out;
      });
}

int SetRouting(const AdminFlags& flags) {
  absl::StatusOr<std::map<std::string, double>> weights = ParseWeights(flags.weights);
  if (!weights.ok()) return Fail(weights.status());
  vitq::v1::SetRoutingRequest request;
  request.set_model(flags.model);
  for (const auto& [name, w] : *weights) (*request.mutable_weights())[name] = w;
  request.set_shadow_variant(flags.shadow_variant);
  request.set_shadow_fraction(flags.shadow_fraction);
  if (!flags.shadow_given) {  // keep the shadow settings in force (SetRouting replaces them)
    absl::StatusOr<AdminClient> client = ConnectAdmin(flags);
    if (!client.ok()) return Fail(client.status());
    grpc::ClientContext context;
    client->Prepare(&context);
    vitq::v1::GetRoutingRequest get;
    get.set_model(flags.model);
    vitq::v1::RoutingTable current;
    if (grpc::Status s = client->stub->GetRouting(&context, get, &current); !s.ok()) {
      return Fail(ToAbslStatus(s));
    }
    request.set_shadow_variant(current.shadow_variant());
    request.set_shadow_fraction(current.shadow_fraction());
  }
  request.set_expected_generation(flags.expected_generation);
  return Call<vitq::v1::SetRoutingRequest, vitq::v1::RoutingTable>(flags, &Admin::Stub::SetRouting,
                                                                   request, RoutingText);
}

int LoadVariant(const AdminFlags& flags) {
  vitq::v1::LoadVariantRequest request;
  request.set_model(flags.model);
  request.set_variant(flags.variant);
  request.set_path(flags.path);
  request.set_precision(flags.precision);
  request.set_weight(flags.weight);
  request.set_replace(flags.replace);
  return Call<vitq::v1::LoadVariantRequest, vitq::v1::VariantInfo>(
      flags, &Admin::Stub::LoadVariant, request,
      [](const vitq::v1::VariantInfo& v) { return "loaded:\n" + VariantText(v); });
}

// CLI11 subcommands of `admin`, each with the options it needs.
struct AdminCommands {
  CLI::App *list, *get_routing, *set_routing, *load_variant, *unload_variant, *reload, *stats;
};

void AddModelOption(CLI::App* command, AdminFlags& flags) {
  command->add_option("--model,-m", flags.model, "model name")->required();
}

// An interval as "[a, b]" in percent.
std::string IntervalText(const Interval& i) {
  return absl::StrFormat("[%.1f, %.1f]", 100 * i.low, 100 * i.high);
}

std::string PValueText(double p) {
  return p < 0.001 ? "p < 0.001" : absl::StrFormat("p = %.3f", p);
}

// One verdict: `a` against `b` on a proportion (labeled accuracy or agreement).
std::string Verdict(const std::string& what, const std::string& a, int64_t a_hits, int64_t a_n,
                    const std::string& b, int64_t b_hits, int64_t b_n) {
  const ProportionTest t = TwoProportionTest(a_hits, a_n, b_hits, b_n);
  const double pa = a_n ? static_cast<double>(a_hits) / a_n : 0,
               pb = b_n ? static_cast<double>(b_hits) / b_n : 0;
  if (t.p_value < 0.05) {
    return absl::StrFormat(
        "%s has %s %s than %s: %.1f%% vs %.1f%% (%+.1f points, 95%% CI [%+.1f, %+.1f], %s)", a,
        t.difference < 0 ? "lower" : "higher", what, b, 100 * pa, 100 * pb, 100 * t.difference,
        100 * t.difference_ci.low, 100 * t.difference_ci.high, PValueText(t.p_value));
  }
  const int64_t needed = SampleSizePerGroup((pa + pb) / 2, 0.01);
  return absl::StrFormat(
      "no significant difference in %s between %s and %s yet: %.1f%% vs %.1f%% (%s); about %d per "
      "variant would detect a 1-point difference (now %d and %d)",
      what, a, b, 100 * pa, 100 * pb, PValueText(t.p_value), needed, a_n, b_n);
}

}  // namespace

absl::StatusOr<std::map<std::string, double>> ParseWeights(const std::string& text) {
  std::map<std::string, double> weights;
  for (absl::string_view entry : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::vector<std::string> kv = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    const std::string shown(absl::StripAsciiWhitespace(entry));
    if (kv.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("--weights: '", shown, "' is not VARIANT=WEIGHT"));
    }
    const std::string name(absl::StripAsciiWhitespace(kv[0]));
    double weight = 0;
    if (name.empty())
      return absl::InvalidArgumentError(
          absl::StrCat("--weights: '", shown, "' has no variant name"));
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(kv[1]), &weight) || !std::isfinite(weight)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--weights: '", shown, "': the weight is not a number"));
    }
    if (weight < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("--weights: '", shown, "': weights must be >= 0"));
    if (!weights.emplace(name, weight).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--weights: variant '", name, "' appears twice"));
    }
  }
  if (weights.empty()) return absl::InvalidArgumentError("--weights: give VARIANT=WEIGHT,...");
  return weights;
}

std::string FormatAbReport(const vitq::v1::StatsResponse& stats) {
  const std::string& reference = stats.reference_variant();
  std::string out = absl::StrFormat("A/B report: %s (shadow reference: %s)\n\n", stats.model(),
                                    reference.empty() ? "none" : reference);
  absl::StrAppendFormat(&out, "%-10s %6s %9s %8s %8s %8s  %-28s %-28s %s\n", "variant", "share",
                        "requests", "p50 ms", "p99 ms", "req/s", "labeled top-1 [95% CI] (n)",
                        "agreement [95% CI] (n)", "cosine");
  for (const auto& v : stats.variants()) {
    const std::string accuracy =
        v.labeled() == 0
            ? "-"
            : absl::StrFormat("%.1f%% %s (%d)", 100.0 * v.labeled_correct() / v.labeled(),
                              IntervalText(WilsonInterval(v.labeled_correct(), v.labeled())),
                              v.labeled());
    std::string agreement = v.variant() == reference ? "reference" : "-";
    if (v.shadow_compared() > 0) {
      agreement =
          absl::StrFormat("%.1f%% %s (%d)", 100.0 * v.shadow_agreed() / v.shadow_compared(),
                          IntervalText(WilsonInterval(v.shadow_agreed(), v.shadow_compared())),
                          v.shadow_compared());
    }
    const std::string cosine =
        v.shadow_compared() > 0 ? absl::StrFormat("%.4f", v.shadow_mean_cosine()) : "-";
    absl::StrAppendFormat(&out, "%-10s %6s %9d %8.2f %8.2f %8.1f  %-28s %-28s %s\n", v.variant(),
                          Percent(v.weight()), v.requests(), v.p50_ms(), v.p99_ms(),
                          v.throughput_rps(), accuracy, agreement, cosine);
  }
  // Labeled accuracy: every variant against the reference, or the most accurate variant when the
  // reference has no labels; then agreement for variants without labels.
  const vitq::v1::VariantStats* base = nullptr;
  for (const auto& v : stats.variants()) {
    if (v.labeled() == 0) continue;
    const double acc = static_cast<double>(v.labeled_correct()) / v.labeled();
    if (v.variant() == reference) {
      base = &v;
      break;
    }
    if (!base || acc > static_cast<double>(base->labeled_correct()) / base->labeled()) base = &v;
  }
  std::vector<std::string> verdicts;
  for (const auto& v : stats.variants()) {
    if (base && &v != base && v.labeled() > 0) {
      verdicts.push_back(Verdict("labeled top-1 accuracy", v.variant(), v.labeled_correct(),
                                 v.labeled(), base->variant(), base->labeled_correct(),
                                 base->labeled()));
    } else if (v.labeled() == 0 && v.shadow_compared() > 0) {
      const Interval ci = WilsonInterval(v.shadow_agreed(), v.shadow_compared());
      verdicts.push_back(absl::StrFormat(
          "%s gives %s's top-1 class on %.1f%% of %d compared images (95%% CI %s); no labels yet",
          v.variant(), reference, 100.0 * v.shadow_agreed() / v.shadow_compared(),
          v.shadow_compared(), IntervalText(ci)));
    }
  }
  if (verdicts.empty()) {
    verdicts.push_back(
        "nothing to compare yet: send labeled requests (--label, Feedback) or enable shadow "
        "traffic");
  }
  out += "\n";
  for (const std::string& v : verdicts) absl::StrAppend(&out, "- ", v, "\n");
  return out;
}

CLI::App* AddAdminCommand(CLI::App& app, AdminFlags& flags) {
  CLI::App* admin = app.add_subcommand(
      "admin",
      "Change routing, load or unload variants, reload the config and read live figures "
      "through the server's vitq.v1.Admin service (its own address, bearer token)");
  admin->require_subcommand(1);
  AddConnectionFlags(admin, &flags.connection);
  admin
      ->add_option("--token-file", flags.token_file,
                   "file holding the admin token (without it, the token itself is read from "
                   "$VITQ_ADMIN_TOKEN)")
      ->check(CLI::ExistingFile);
  admin->add_flag("--json", flags.json, "print the response as JSON (protobuf's JSON mapping)");
  AddTimeoutFlag(admin, &flags.timeout_ms);
  admin->add_subcommand("list", "models, their routing and their variants");
  AddModelOption(admin->add_subcommand("get-routing", "the routing table of one model"), flags);
  CLI::App* set = admin->add_subcommand("set-routing",
                                        "replace a model's routing weights (and shadow settings)");
  AddModelOption(set, flags);
  set->add_option("--weights", flags.weights,
                  "VARIANT=WEIGHT,... (relative; unnamed variants get 0)")
      ->required();
  set->add_option(
         "--shadow-variant", flags.shadow_variant,
         "reference variant that gets sampled copies ('' disables; default: keep the current)")
      ->each([&flags](const std::string&) { flags.shadow_given = true; });
  set->add_option("--shadow-fraction", flags.shadow_fraction,
                  "share of requests copied to it, in [0, 1]");
  set->add_option("--expected-generation", flags.expected_generation,
                  "apply only if the routing is still at this generation (0: always)");
  CLI::App* load = admin->add_subcommand(
      "load-variant", "load and warm up an artifact as a new variant, then route to it");
  AddModelOption(load, flags);
  load->add_option("--variant", flags.variant, "new variant name")->required();
  load->add_option("--path", flags.path,
                   "artifact path on the server (relative: to its config folder)")
      ->required();
  load->add_option("--precision", flags.precision, "float layers: fp32 or bf16")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  load->add_option("--weight", flags.weight, "routing weight once loaded (0: by name only)");
  load->add_flag("--replace", flags.replace, "replace a variant of the same name");
  CLI::App* unload = admin->add_subcommand(
      "unload-variant", "take a variant out of routing; freed after its last request");
  AddModelOption(unload, flags);
  unload->add_option("--variant", flags.variant, "variant to unload")->required();
  admin->add_subcommand("reload", "re-read the server's config file and apply it (like SIGHUP)");
  AddModelOption(admin->add_subcommand("stats", "live per-variant figures of one model"), flags);
  return admin;
}

CLI::App* AddAbReportCommand(CLI::App& app, AdminFlags& flags) {
  CLI::App* report =
      app.add_subcommand("ab-report",
                         "Compare a model's variants on live traffic (Admin Stats): accuracy and "
                         "agreement with 95% intervals, latency, throughput, significance tests");
  AddModelOption(report, flags);
  AddConnectionFlags(report, &flags.connection);
  report
      ->add_option("--token-file", flags.token_file,
                   "file holding the admin token (without it, the token itself is read from "
                   "$VITQ_ADMIN_TOKEN)")
      ->check(CLI::ExistingFile);
  report->add_flag("--json", flags.json, "print the raw Stats response as JSON");
  AddTimeoutFlag(report, &flags.timeout_ms);
  return report;
}

CLI::App* AddFeedbackCommand(CLI::App& app, FeedbackFlags& flags) {
  CLI::App* command = app.add_subcommand(
      "feedback",
      "Send the true label of an answered request (its response id) to the server, "
      "for the labeled accuracy of the variant that answered it");
  // Accepted so that feedback reads like classify; the request id alone names the answer.
  command->add_option("--model,-m", flags.model, "model of the request (informational)");
  command
      ->add_option("--request-id", flags.request_id,
                   "id from the response (vitq-client classify prints it)")
      ->required();
  command->add_option("--label", flags.label, "the true class: index or class name")->required();
  AddTimeoutFlag(command, &flags.timeout_ms);
  AddConnectionFlags(command, &flags.connection);
  return command;
}

int RunAdmin(const CLI::App& admin, const AdminFlags& flags) {
  const std::string name = admin.get_subcommands().at(0)->get_name();
  if (name == "list") return ListModels(flags);
  if (name == "set-routing") return SetRouting(flags);
  if (name == "load-variant") return LoadVariant(flags);
  if (name == "get-routing") {
    vitq::v1::GetRoutingRequest request;
    request.set_model(flags.model);
    return Call<vitq::v1::GetRoutingRequest, vitq::v1::RoutingTable>(
        flags, &Admin::Stub::GetRouting, request, RoutingText);
  }
  if (name == "unload-variant") {
    vitq::v1::UnloadVariantRequest request;
    request.set_model(flags.model);
    request.set_variant(flags.variant);
    return Call<vitq::v1::UnloadVariantRequest, vitq::v1::RoutingTable>(
        flags, &Admin::Stub::UnloadVariant, request, RoutingText);
  }
  if (name == "reload") {
    return Call<vitq::v1::ReloadConfigRequest, vitq::v1::ReloadConfigResponse>(
        flags, &Admin::Stub::ReloadConfig, {}, [](const vitq::v1::ReloadConfigResponse& r) {
          if (r.changes().empty()) return std::string("nothing changed\n");
          std::string out;
          for (const auto& c : r.changes()) absl::StrAppend(&out, c, "\n");
          return out;
        });
  }
  vitq::v1::StatsRequest request;  // stats
  request.set_model(flags.model);
  return Call<vitq::v1::StatsRequest, vitq::v1::StatsResponse>(flags, &Admin::Stub::Stats, request,
                                                               StatsText);
}

int RunAbReport(const AdminFlags& flags) {
  vitq::v1::StatsRequest request;
  request.set_model(flags.model);
  return Call<vitq::v1::StatsRequest, vitq::v1::StatsResponse>(flags, &Admin::Stub::Stats, request,
                                                               FormatAbReport);
}

int RunFeedback(const FeedbackFlags& flags) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect(flags.connection);
  if (!channel.ok()) return Fail(channel.status());
  auto stub = vitq::v1::Classifier::NewStub(*channel);
  grpc::ClientContext context;
  SetTimeout(flags.timeout_ms, &context);
  vitq::v1::FeedbackRequest request;
  request.set_request_id(flags.request_id);
  request.set_label(flags.label);
  vitq::v1::FeedbackResponse response;
  const grpc::Status status = stub->Feedback(&context, request, &response);
  if (!status.ok()) return Fail(ToAbslStatus(status));
  std::printf("%s/%s was %s\n", response.model().c_str(), response.variant().c_str(),
              response.correct() ? "right" : "wrong");
  return kExitOk;
}

}  // namespace vitq::client
