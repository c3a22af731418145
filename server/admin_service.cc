#include "server/admin_service.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/grpc_util.h"
#include "server/server.h"

namespace vitq::server {
namespace {

// Compares without an early exit, so the time taken does not reveal how much of a guess matched.
bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::string& longer = a.size() >= b.size() ? a : b;
  for (size_t i = 0; i < longer.size(); ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0;
    const unsigned char y = i < b.size() ? b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

void FillRoutingTable(const std::string& model, const RoutingTable& table,
                      vitq::v1::RoutingTable& out) {
  out.set_model(model);
  for (const auto& e : table.entries()) (*out.mutable_weights())[e.variant->name()] = e.weight;
  out.set_shadow_variant(table.shadow().variant);
  out.set_shadow_fraction(table.shadow().fraction);
  out.set_generation(table.generation());
  out.set_updated_unix_us(table.created_unix_us());
}

void FillVariantInfo(const RoutingTable& table, const Variant& v, vitq::v1::VariantInfo& out) {
  out.set_model(v.model_name());
  out.set_variant(v.name());
  out.set_arch(ArchName(v.model_config().arch));
  out.set_precision(v.precision());
  out.set_artifact(v.config().path.empty() ? "preset:" + v.config().preset : v.config().path);
  out.set_state(vitq::v1::VARIANT_STATE_READY);
  out.set_weight(table.Share(v.name()));
  out.set_shadow(table.shadow().variant == v.name());
  out.set_weight_bytes(v.weight_bytes());
}

std::string WeightsText(const google::protobuf::Map<std::string, double>& weights) {
  std::map<std::string, double> sorted(weights.begin(), weights.end());
  return absl::StrJoin(sorted, ",", absl::PairFormatter("="));
}

}  // namespace

absl::StatusOr<std::string> ReadAdminToken(const std::string& token_file) {
  if (!token_file.empty()) {
    absl::StatusOr<std::string> text = ReadFileToString(token_file);
    if (!text.ok()) return text.status();
    std::string token(absl::StripAsciiWhitespace(*text));
    if (token.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("admin token file ", token_file, " is empty"));
    }
    return token;
  }
  const char* env = std::getenv("VITQ_ADMIN_TOKEN");
  if (env && *env) return std::string(absl::StripAsciiWhitespace(env));
  return absl::FailedPreconditionError(
      "the admin service needs a token: set server.admin.token_file (or --admin-token-file) or "
      "the environment variable VITQ_ADMIN_TOKEN; or leave server.admin.listen empty");
}

AdminService::AdminService(ModelRepository* repository, std::string token, std::string config_dir,
                           ReloadFn reload, ServerMetrics* metrics)
    : repository_(repository),
      token_(std::move(token)),
      config_dir_(std::move(config_dir)),
      reload_(std::move(reload)),
      metrics_(metrics) {}

grpc::Status AdminService::Authenticate(const grpc::ServerContext& context) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "admin calls need the header 'authorization: Bearer <token>'");
  }
  const std::string value(it->second.data(), it->second.size());
  constexpr std::string_view kBearer = "Bearer ";
  if (value.rfind(kBearer, 0) != 0 || !ConstantTimeEquals(value.substr(kBearer.size()), token_)) {
    std::fprintf(stderr, "vitq-server: admin: refused a call from %s: wrong token\n",
                 context.peer().c_str());
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong admin token");
  }
  return grpc::Status::OK;
}

void AdminService::Audit(const grpc::ServerContext& context, const std::string& operation,
                         const std::string& what, const absl::Status& outcome) const {
  std::string who = context.peer();
  if (auto auth = context.auth_context(); auth && auth->IsPeerAuthenticated()) {
    for (const auto& identity : auth->GetPeerIdentity())
      absl::StrAppend(&who, " ", identity.data());
  }
  const std::string when = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
  std::fprintf(stderr, "vitq-server: admin: %s %s %s %s -> %s\n", when.c_str(), who.c_str(),
               operation.c_str(), what.c_str(),
               outcome.ok()
                   ? "OK"
                   : absl::StrCat(StatusCodeName(outcome.code()), ": ", outcome.message()).c_str());
  if (metrics_) metrics_->OnAdminChange(operation, outcome.code());
}

grpc::Status AdminService::ListModels(grpc::ServerContext* context,
                                      const vitq::v1::ListModelsRequest*,
                                      vitq::v1::ListModelsResponse* response) {
  if (grpc::Status s = Authenticate(*context); !s.ok()) return s;
  for (const auto& model : repository_->models()) {
    auto* out = response->add_models();
    out->set_name(model->name());
    const std::shared_ptr<const RoutingTable> table = model->routing();
    FillRoutingTable(model->name(), *table, *out->mutable_routing());
    for (const auto& e : table->entries())
      FillVariantInfo(*table, *e.variant, *out->add_variants());
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::GetRouting(grpc::ServerContext* context,
                                      const vitq::v1::GetRoutingRequest* request,
                                      vitq::v1::RoutingTable* response) {
  if (grpc::Status s = Authenticate(*context); !s.ok()) return s;
  std::shared_ptr<const ServedModel> model = repository_->Find(request->model());
  if (!model) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("unknown model '", request->model(), "'"));
  }
  FillRoutingTable(model->name(), *model->routing(), *response);
  return grpc::Status::OK;
}

grpc::Status AdminService::SetRouting(grpc::ServerContext* context,
                                      const vitq::v1::SetRoutingRequest* request,
                                      vitq::v1::RoutingTable* response) {
  if (grpc::Status s = Authenticate(*context); !s.ok()) return s;
  RoutingChange change;
  change.weights.insert(request->weights().begin(), request->weights().end());
  change.shadow = {request->shadow_variant(), request->shadow_fraction()};
  change.expected_generation = request->expected_generation();
  absl::StatusOr<std::shared_ptr<const RoutingTable>> table =
      repository_->SetRouting(request->model(), change);
  std::string what =
      absl::StrCat("model=", request->model(), " weights=", WeightsText(request->weights()));
  if (!request->shadow_variant().empty()) {
    absl::StrAppend(&what, " shadow=", request->shadow_variant(), ":", request->shadow_fraction());
  }
  if (table.ok()) absl::StrAppend(&what, " generation=", (*table)->generation());
  Audit(*context, "set_routing", what, table.status());
  if (!table.ok()) return ToGrpcStatus(table.status());
  FillRoutingTable(request->model(), **table, *response);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListVariants(grpc::ServerContext* context,
                                        const vitq::v1::ListVariantsRequest* request,
                                        vitq::v1::ListVariantsResponse* response) {
  if (grpc::Status s = Authenticate(*context); !s.ok()) return s;
  bool found = request->model().empty();
  for (const auto& model : repository_->models()) {
    if (!request->model().empty() && model->name() != request->model()) continue;
    found = true;
    const std::shared_ptr<const RoutingTable> table = model->routing();
    for (const auto& e : table->entries())
      FillVariantInfo(*table, *e.variant, *response->add_variants());
  }
  if (!found) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("unknown model '", request->model(), "'"));
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::LoadVariant(grpc::ServerContext* context,
                                       const vitq::v1::LoadVariantRequest* request,
                                       vitq::v1::VariantInfo* response) {
  if (grpc::Status s = Authenticate(*context); !s.ok()) return s;
  VariantConfig config;
  config.name = request->variant();
  config.path = request->path();
  if (!config.path.empty() && !std::filesystem::path(config.path).is_absolute()) {
    config.path = (std::filesystem::path(config_dir_) / config.path).lexically_normal().string();
  }
  config.precision = request->precision().empty() ? "fp32" : request->precision();
  config.weight = request->weight();
  const std::string what =
      absl::StrCat("model=", request->model(), " variant=", config.name, " path=", config.path,
                   " weight=", config.weight, request->replace() ? " replace" : "");
  absl::Status invalid;
  if (config.name.empty() || config.path.empty()) {
    invalid = absl::InvalidArgumentError("variant and path are required");
  } else if (config.precision != "fp32" && config.precision != "bf16") {
    invalid = absl::InvalidArgumentError("precision must be fp32 or bf16");
  }
  if (!invalid.ok()) {
    Audit(*context, "load_variant", what, invalid);
    return ToGrpcStatus(invalid);
  }
  absl::StatusOr<std::shared_ptr<Variant>> loaded =
      repository_->LoadVariant(request->model(), config, request->replace());
  Audit(*context, "load_variant", what, loaded.status());
  if (!loaded.ok()) return ToGrpcStatus(loaded.status());
  std::shared_ptr<const ServedModel> model = repository_->Find(request->model());
  if (model) FillVariantInfo(*model->routing(), **loaded, *response);
  return grpc::Status::OK;
}

grpc::Status AdminService::UnloadVariant(grpc::ServerContext* context,
                                         const vitq::v1::UnloadVariantRequest* request,
                                         vitq::v1::RoutingTable* response) {
  if (grpc::Status s = Authenticate(*context); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<const RoutingTable>> table =
      repository_->UnloadVariant(request->model(), request->variant());
  Audit(*context, "unload_variant",
        absl::StrCat("model=", request->model(), " variant=", request->variant()), table.status());
  if (!table.ok()) return ToGrpcStatus(table.status());
  FillRoutingTable(request->model(), **table, *response);
  return grpc::Status::OK;
}

grpc::Status AdminService::ReloadConfig(grpc::ServerContext* context,
                                        const vitq::v1::ReloadConfigRequest*,
                                        vitq::v1::ReloadConfigResponse* response) {
  if (grpc::Status s = Authenticate(*context); !s.ok()) return s;
  absl::StatusOr<std::vector<std::string>> changes = reload_();
  Audit(*context, "reload",
        changes.ok() ? absl::StrCat(changes->size(), " change(s)") : std::string("config"),
        changes.status());
  if (!changes.ok()) return ToGrpcStatus(changes.status());
  for (const std::string& change : *changes) response->add_changes(change);
  return grpc::Status::OK;
}

grpc::Status AdminService::Stats(grpc::ServerContext* context,
                                 const vitq::v1::StatsRequest* request,
                                 vitq::v1::StatsResponse* response) {
  if (grpc::Status s = Authenticate(*context); !s.ok()) return s;
  std::shared_ptr<const ServedModel> model = repository_->Find(request->model());
  if (!model) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("unknown model '", request->model(), "'"));
  }
  const std::shared_ptr<const RoutingTable> table = model->routing();
  response->set_model(model->name());
  response->set_reference_variant(table->shadow().variant);
  const int64_t now_us = Clock::Real()->NowMicros();
  for (const auto& e : table->entries()) {
    const VariantStatsSnapshot s = e.variant->stats().Read(now_us);
    auto* out = response->add_variants();
    out->set_variant(e.variant->name());
    out->set_weight(table->Share(e.variant->name()));
    out->set_requests(s.requests);
    out->set_errors(s.errors);
    out->set_p50_ms(s.p50_ms);
    out->set_p99_ms(s.p99_ms);
    out->set_throughput_rps(s.throughput_rps);
    out->set_labeled(s.labeled);
    out->set_labeled_correct(s.labeled_correct);
    out->set_shadow_compared(s.shadow_compared);
    out->set_shadow_agreed(s.shadow_agreed);
    out->set_shadow_dropped(s.shadow_dropped);
    out->set_shadow_mean_cosine(s.shadow_mean_cosine);
    out->set_uptime_s(s.uptime_s);
  }
  return grpc::Status::OK;
}

}  // namespace vitq::server
