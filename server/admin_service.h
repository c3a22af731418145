// vitq.v1.Admin: run-time control of routing and variants (the hot switch) and live per-variant
// figures for A/B reports. Served on its own port (server.admin.listen), every call
// authenticated by a bearer token (`authorization: Bearer <token>`; UNAUTHENTICATED otherwise),
// every change written to the log with who (peer address, client certificate identity), what
// and when, and counted in vitq_admin_changes_total.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/metrics.h"
#include "server/model_repository.h"
#include "vitq/v1/classifier.grpc.pb.h"

namespace vitq::server {

class AdminService final : public vitq::v1::Admin::Service {
 public:
  // Reloads the config file; returns the changes (VitqServer::ReloadConfig).
  using ReloadFn = std::function<absl::StatusOr<std::vector<std::string>>()>;

  // `token` must not be empty. `config_dir` resolves relative artifact paths of LoadVariant.
  // `metrics` may be null.
  AdminService(ModelRepository* repository, std::string token, std::string config_dir,
               ReloadFn reload, ServerMetrics* metrics);

  grpc::Status ListModels(grpc::ServerContext* context, const vitq::v1::ListModelsRequest* request,
                          vitq::v1::ListModelsResponse* response) override;
  grpc::Status GetRouting(grpc::ServerContext* context, const vitq::v1::GetRoutingRequest* request,
                          vitq::v1::RoutingTable* response) override;
  grpc::Status SetRouting(grpc::ServerContext* context, const vitq::v1::SetRoutingRequest* request,
                          vitq::v1::RoutingTable* response) override;
  grpc::Status ListVariants(grpc::ServerContext* context,
                            const vitq::v1::ListVariantsRequest* request,
                            vitq::v1::ListVariantsResponse* response) override;
  grpc::Status LoadVariant(grpc::ServerContext* context,
                           const vitq::v1::LoadVariantRequest* request,
                           vitq::v1::VariantInfo* response) override;
  grpc::Status UnloadVariant(grpc::ServerContext* context,
                             const vitq::v1::UnloadVariantRequest* request,
                             vitq::v1::RoutingTable* response) override;
  grpc::Status ReloadConfig(grpc::ServerContext* context,
                            const vitq::v1::ReloadConfigRequest* request,
                            vitq::v1::ReloadConfigResponse* response) override;
  grpc::Status Stats(grpc::ServerContext* context, const vitq::v1::StatsRequest* request,
                     vitq::v1::StatsResponse* response) override;

 private:
  grpc::Status Authenticate(const grpc::ServerContext& context) const;
  // Logs and counts one change: "admin: <time> <who> <operation> <what> -> <outcome>".
  void Audit(const grpc::ServerContext& context, const std::string& operation,
             const std::string& what, const absl::Status& outcome) const;

  ModelRepository* const repository_;
  const std::string token_;
  const std::string config_dir_;
  const ReloadFn reload_;
  ServerMetrics* const metrics_;
};

// Reads the admin token: the file's contents without surrounding whitespace, else the
// environment variable VITQ_ADMIN_TOKEN. FAILED_PRECONDITION when neither gives one.
absl::StatusOr<std::string> ReadAdminToken(const std::string& token_file);

}  // namespace vitq::server
