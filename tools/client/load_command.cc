#include "tools/client/load_command.h"

#include <algorithm>
#include <cstdio>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/client/classify_command.h"  // AddModelFlags
#include "tools/client/inference_client.h"
#include "tools/client/load_generator.h"
#include "tools/client/load_report.h"
#include "tools/client/requests.h"

namespace vitq::client {
namespace {

void AddInputFlags(CLI::App* command, LoadFlags& flags) {
  CLI::Option_group* input =
      command->add_option_group("input", "What each request carries; give exactly one of these");
  input
      ->add_option("--image", flags.images,
                   "encoded image file (JPEG, PNG, BMP, WebP); repeat for several, requests "
                   "cycle through them")
      ->check(CLI::ExistingFile);
  input
      ->add_option("--tensor-shape", flags.tensor_shape,
                   "send a preprocessed float tensor of this shape C,H,W (e.g. 3,224,224) filled "
                   "with fixed pseudo-random normal values; kserve: input \"input\" FP32 "
                   "[1,C,H,W]")
      ->delimiter(',')
      ->expected(3)
      ->check(Positive());
  input->require_option(1);
}

void AddStopFlags(CLI::App* command, LoadFlags& flags) {
  CLI::Option_group* stop =
      command->add_option_group("stop", "When to stop sending; give exactly one of these");
  stop->add_option("--requests,-n", flags.requests,
                   "number of requests to send (open loop: scheduled sends, skipped included)")
      ->check(Positive());
  stop->add_option("--duration", flags.duration_s,
                   "seconds to keep sending; outstanding requests are then awaited")
      ->check(Positive());
  stop->require_option(1);
}

void AddPacingFlags(CLI::App* command, LoadFlags& flags) {
  command
      ->add_option("--concurrency,-c", flags.concurrency,
                   absl::StrCat("closed loop: requests kept in flight (default 1); with --rate: "
                                "most requests in flight, further sends are skipped (default ",
                                kDefaultOpenLoopMaxOutstanding,
                                "); also the warm-up concurrency (default 1)"))
      ->check(CLI::Range(1, kDefaultOpenLoopMaxOutstanding));
  command
      ->add_option("--rate", flags.rate_rps,
                   "open loop: send this many requests per second whatever the server does "
                   "(default: closed loop, the next request goes when one completes); latency "
                   "then counts from each request's scheduled send time")
      ->check(Positive());
  command
      ->add_option("--warmup-requests", flags.warmup_requests,
                   "requests sent (closed loop) and awaited before measuring; not counted")
      ->check(NonNegative())
      ->capture_default_str();
  command->add_flag("--json", flags.json,
                    "print one JSON object (sent, completed, duration_s, throughput_rps, codes, "
                    "latency_ms {p50,p90,p99,max,mean}, variants; open loop adds late, skipped)");
}

absl::StatusOr<std::vector<Payload>> LoadPayloads(const LoadFlags& flags) {
  std::vector<Payload> payloads;
  if (!flags.tensor_shape.empty()) {
    absl::StatusOr<Payload> tensor = RandomTensorPayload(flags.tensor_shape);
    if (!tensor.ok()) return tensor.status();
    payloads.push_back(*std::move(tensor));
    return payloads;
  }
  for (const std::string& path : flags.images) {
    absl::StatusOr<Payload> image = ReadImagePayload(path);
    if (!image.ok()) return image.status();
    payloads.push_back(*std::move(image));
  }
  return payloads;
}

LoadOptions LoadOptionsFrom(const LoadFlags& flags) {
  LoadOptions options;
  options.concurrency = flags.concurrency > 0 ? flags.concurrency : 1;
  if (flags.requests > 0) options.requests = flags.requests;
  if (flags.duration_s > 0) options.duration = absl::Seconds(flags.duration_s);
  if (flags.rate_rps > 0) {
    options.rate_rps = flags.rate_rps;
    options.max_outstanding =
        flags.concurrency > 0 ? flags.concurrency : kDefaultOpenLoopMaxOutstanding;
  }
  options.warmup_requests = flags.warmup_requests;
  return options;
}

std::string DescribeRun(const LoadFlags& flags, const LoadOptions& options, size_t payloads) {
  std::string line = absl::StrCat("load: ", flags.api, " API, model ", flags.model);
  if (!flags.variant.empty()) absl::StrAppend(&line, ", variant ", flags.variant);
  absl::StrAppend(&line, ", ", payloads, flags.tensor_shape.empty() ? " image(s)" : " tensor");
  if (options.rate_rps) {
    absl::StrAppendFormat(&line, ", open loop at %g req/s (at most %d in flight)",
                          *options.rate_rps, options.max_outstanding);
  } else {
    absl::StrAppend(&line, ", closed loop with ", options.concurrency, " in flight");
  }
  if (options.requests) absl::StrAppend(&line, ", ", *options.requests, " requests");
  if (options.duration) absl::StrAppend(&line, ", ", absl::FormatDuration(*options.duration));
  if (options.warmup_requests > 0) {
    absl::StrAppend(&line, " after ", options.warmup_requests, " warm-up requests");
  }
  return line;
}

// The error to exit with when nothing succeeded: the first occurrence of the most frequent
// failure, so that e.g. a wrong model name reads as NOT_FOUND with the server's message.
absl::Status NothingSucceeded(const LoadSummary& summary) {
  const absl::Status* most_frequent = nullptr;
  int64_t most = 0;
  for (const auto& [code, first] : summary.first_error) {
    const int64_t count = summary.codes.at(code);
    if (count > most) std::tie(most_frequent, most) = std::make_tuple(&first, count);
  }
  const std::string sent = absl::StrCat("no request succeeded (", summary.sent, " sent)");
  if (most_frequent == nullptr) return absl::UnknownError(sent);
  return absl::Status(most_frequent->code(),
                      absl::StrCat(sent, "; first error: ", most_frequent->message()));
}

}  // namespace

CLI::App* AddLoadCommand(CLI::App& app, LoadFlags& flags) {
  CLI::App* command = app.add_subcommand(
      "load",
      "Load-test the server (closed loop at a fixed concurrency, or open loop at a fixed rate) "
      "and report throughput, status codes, exact latency percentiles and the variants that "
      "answered");
  AddModelFlags(command, &flags.model, &flags.variant, &flags.api, &flags.top_k);
  AddTimeoutFlag(command, &flags.timeout_ms);
  AddPacingFlags(command, flags);
  AddConnectionFlags(command, &flags.connection);
  AddInputFlags(command, flags);
  AddStopFlags(command, flags);
  return command;
}

int RunLoad(const LoadFlags& flags) {
  absl::StatusOr<Api> api = ParseApi(flags.api);
  if (!api.ok()) return Fail(api.status());
  absl::StatusOr<std::vector<Payload>> payloads = LoadPayloads(flags);
  if (!payloads.ok()) return Fail(payloads.status());
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect(flags.connection);
  if (!channel.ok()) return Fail(channel.status());

  ClientOptions client_options;
  client_options.api = *api;
  client_options.request = {flags.model, flags.variant, flags.top_k, /*label=*/""};
  client_options.timeout_ms = flags.timeout_ms;
  std::unique_ptr<InferenceClient> client =
      InferenceClient::Create(*std::move(channel), client_options, *payloads);
  payloads->clear();  // the client holds encoded copies

  const LoadOptions options = LoadOptionsFrom(flags);
  if (!flags.json) {
    std::printf("%s\n", DescribeRun(flags, options, client->num_requests()).c_str());
    std::fflush(stdout);
  }
  const LoadSummary summary =
      Summarize(GenerateLoad(*client, options), options.rate_rps.has_value());
  const std::string report = flags.json ? FormatJson(summary) + "\n" : FormatText(summary);
  std::fputs(report.c_str(), stdout);
  std::fflush(stdout);
  if (summary.completed == 0) return Fail(NothingSucceeded(summary));
  return kExitOk;
}

}  // namespace vitq::client
