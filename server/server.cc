#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace vitq::server {
namespace {

std::string ModelHealthService(const std::string& model) { return "vitq.model." + model; }

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const TlsConfig& tls) {
  if (tls.cert.empty() != tls.key.empty()) {
    return absl::InvalidArgumentError("TLS needs both a certificate and its key");
  }
  if (tls.cert.empty()) {
    if (!tls.client_ca.empty()) {
      return absl::InvalidArgumentError("mutual TLS (client CA) needs a server certificate and key");
    }
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl(
      tls.client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                 : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  absl::StatusOr<std::string> cert = ReadFileToString(tls.cert);
  absl::StatusOr<std::string> key = ReadFileToString(tls.key);
  if (!cert.ok()) return cert.status();
  if (!key.ok()) return key.status();
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!tls.client_ca.empty()) {
    absl::StatusOr<std::string> ca = ReadFileToString(tls.client_ca);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::unique_ptr<VitqServer>> VitqServer::Start(const ServerConfig& config) {
  auto metrics = std::make_unique<ServerMetrics>();
  absl::StatusOr<std::unique_ptr<ModelRepository>> repo =
      ModelRepository::Load(config, metrics.get());
  if (!repo.ok()) return repo.status();
  return StartWith(config, std::move(*repo), std::move(metrics));
}

absl::StatusOr<std::unique_ptr<VitqServer>> VitqServer::StartWith(
    const ServerConfig& config, std::unique_ptr<ModelRepository> repo,
    std::unique_ptr<ServerMetrics> metrics) {
  std::unique_ptr<VitqServer> server(new VitqServer());
  server->config_ = config;
  server->metrics_ = std::move(metrics);
  server->repository_ = std::move(repo);
  if (absl::Status s = server->Build(); !s.ok()) return s;
  return server;
}

absl::Status VitqServer::Build() {
  const ServerConfig& config = config_;
  if (!config.metrics_listen.empty()) {
    if (absl::Status s = metrics_->Serve(config.metrics_listen); !s.ok()) return s;
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = Credentials(config.tls);
  if (!credentials.ok()) return credentials.status();
  frontend_ = std::make_unique<Frontend>(repository_.get(), metrics_.get());
  inference_service_ = std::make_unique<InferenceService>(frontend_.get());
  classifier_service_ = std::make_unique<ClassifierService>(frontend_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen, *credentials, &port_);
  builder.RegisterService(inference_service_.get());
  builder.RegisterService(classifier_service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config.max_message_bytes));
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen,
                                               " (address in use or invalid?)"));
  }
  SetServing(true);
  return absl::OkStatus();
}

void VitqServer::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (!health) return;
  health->SetServingStatus(serving);  // every service, "" included
  for (const ServedModel* model : repository_->models()) {
    health->SetServingStatus(ModelHealthService(model->name()), serving);
  }
}

bool VitqServer::Drain(double grace_s) {
  absl::MutexLock lock(&drain_mu_);
  if (drained_) return drain_result_;
  std::fprintf(stderr, "vitq-server: draining (grace %.1f s)\n", grace_s);
  SetServing(false);
  frontend_->StartDraining();
  const auto start = std::chrono::steady_clock::now();
  // Requests already being decoded still reach their queue before the queues drain.
  frontend_->AwaitPrepared(start + std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000)));
  const double grace_left_s =
      std::max(0.0, grace_s - std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  drain_result_ = repository_->Drain(static_cast<int64_t>(grace_left_s * 1e6));
  // Every queued request has been answered; what is left are calls finishing their writes.
  const double left_s =
      grace_s - std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(std::max(left_s, 0.5) * 1000)));
  drained_ = true;
  std::fprintf(stderr, "vitq-server: drained%s\n",
               drain_result_ ? "" : " (grace ran out: some queued requests were refused)");
  return drain_result_;
}

void VitqServer::Wait() {
  absl::MutexLock lock(&drain_mu_);
  drain_mu_.Await(absl::Condition(&drained_));
}

VitqServer::~VitqServer() {
  if (server_) Drain(config_.drain_grace_s);
  if (server_) server_->Wait();
}

}  // namespace vitq::server
