#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vitq::server {
namespace {

std::string ModelHealthService(const std::string& model) { return "vitq.model." + model; }

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const TlsConfig& tls) {
  if (tls.cert.empty() != tls.key.empty()) {
    return absl::InvalidArgumentError("TLS needs both a certificate and its key");
  }
  if (tls.cert.empty()) {
    if (!tls.client_ca.empty()) {
      return absl::InvalidArgumentError(
          "mutual TLS (client CA) needs a server certificate and key");
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

// Server-section settings a reload cannot apply to a running server.
std::vector<std::string> RestartOnlyChanges(const ServerConfig& running, const ServerConfig& file) {
  std::vector<std::string> changed;
  if (running.listen != file.listen) changed.push_back("listen");
  if (running.metrics_listen != file.metrics_listen) changed.push_back("metrics_listen");
  if (running.max_message_bytes != file.max_message_bytes) changed.push_back("max_message_bytes");
  if (running.engine_threads != file.engine_threads) changed.push_back("engine_threads");
  if (running.tls.cert != file.tls.cert || running.tls.key != file.tls.key ||
      running.tls.client_ca != file.tls.client_ca) {
    changed.push_back("tls");
  }
  if (running.admin.listen != file.admin.listen ||
      running.admin.token_file != file.admin.token_file)
    changed.push_back("admin");
  return changed;
}

constexpr auto kConfigPollInterval = absl::Seconds(2);

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
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", config.listen, " (address in use or invalid?)"));
  }
  if (absl::Status s = StartAdmin(*credentials); !s.ok()) return s;
  SetServing(true);
  repository_->OnModelsChanged([this] { SetServing(!frontend_->draining()); });
  adaptive_ = std::make_unique<AdaptiveRunner>(repository_.get(), metrics_.get());
  if (config.watch_config && !config.source_path.empty()) {
    watcher_ = std::thread([this] { WatchConfig(); });
  }
  return absl::OkStatus();
}

absl::Status VitqServer::StartAdmin(const std::shared_ptr<grpc::ServerCredentials>& credentials) {
  if (config_.admin.listen.empty()) return absl::OkStatus();
  absl::StatusOr<std::string> token = ReadAdminToken(config_.admin.token_file);
  if (!token.ok()) return token.status();
  const std::string config_dir = std::filesystem::path(config_.source_path).parent_path().string();
  admin_service_ = std::make_unique<AdminService>(
      repository_.get(), *token, config_dir, [this] { return ReloadConfig(); }, metrics_.get());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config_.admin.listen, credentials, &admin_port_);
  builder.RegisterService(admin_service_.get());
  admin_server_ = builder.BuildAndStart();
  if (!admin_server_ || admin_port_ == 0) {
    return absl::UnavailableError(absl::StrCat("admin: cannot listen on ", config_.admin.listen,
                                               " (address in use or invalid?)"));
  }
  return absl::OkStatus();
}

void VitqServer::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (!health) return;
  health->SetServingStatus(serving);  // every service, "" included
  absl::MutexLock lock(&health_mu_);
  std::set<std::string> current;
  for (const auto& model : repository_->models()) {
    current.insert(ModelHealthService(model->name()));
    health->SetServingStatus(ModelHealthService(model->name()), serving);
  }
  // A model removed by a reload is no longer served.
  for (const std::string& gone : health_models_) {
    if (!current.count(gone)) health->SetServingStatus(gone, false);
  }
  health_models_.insert(current.begin(), current.end());
}

absl::StatusOr<std::vector<std::string>> VitqServer::ReloadConfig() {
  absl::MutexLock lock(&reload_mu_);
  if (config_.source_path.empty()) {
    return absl::FailedPreconditionError("the server was not started from a config file");
  }
  std::fprintf(stderr, "vitq-server: reloading %s\n", config_.source_path.c_str());
  absl::StatusOr<ServerConfig> file = LoadServerConfig(config_.source_path);
  absl::StatusOr<std::vector<std::string>> changes =
      file.ok() ? repository_->Reload(*file)
                : absl::StatusOr<std::vector<std::string>>(file.status());
  if (!changes.ok()) {
    std::fprintf(stderr, "vitq-server: reload rejected, still serving the previous config: %s\n",
                 std::string(changes.status().message()).c_str());
    if (metrics_) metrics_->OnAdminChange("reload", changes.status().code());
    return changes.status();
  }
  if (std::vector<std::string> ignored = RestartOnlyChanges(config_, *file); !ignored.empty()) {
    changes->push_back(absl::StrCat("server: ", absl::StrJoin(ignored, ", "),
                                    " changed; takes effect after a restart"));
  }
  for (const std::string& change : *changes) {
    std::fprintf(stderr, "vitq-server: reload: %s\n", change.c_str());
  }
  if (changes->empty()) std::fprintf(stderr, "vitq-server: reload: nothing changed\n");
  if (metrics_) metrics_->OnAdminChange("reload", absl::StatusCode::kOk);
  return changes;
}

void VitqServer::WatchConfig() {
  absl::StatusOr<std::string> last = ReadFileToString(config_.source_path);
  absl::MutexLock lock(&watch_mu_);
  while (!watch_mu_.AwaitWithTimeout(absl::Condition(&stop_watching_), kConfigPollInterval)) {
    // Contents, not the modification time: a Kubernetes ConfigMap update swaps a symlink.
    absl::StatusOr<std::string> now = ReadFileToString(config_.source_path);
    if (!now.ok() || (last.ok() && *now == *last)) continue;
    last = now;
    watch_mu_.Unlock();
    std::fprintf(stderr, "vitq-server: %s changed\n", config_.source_path.c_str());
    (void)ReloadConfig();  // logs its outcome; a bad file keeps the old config serving
    watch_mu_.Lock();
  }
}

void VitqServer::StopWatching() {
  {
    absl::MutexLock lock(&watch_mu_);
    stop_watching_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
}

bool VitqServer::Drain(double grace_s) {
  absl::MutexLock lock(&drain_mu_);
  if (drained_) return drain_result_;
  std::fprintf(stderr, "vitq-server: draining (grace %.1f s)\n", grace_s);
  StopWatching();
  adaptive_.reset();  // routing stays as it is while the queues drain
  SetServing(false);
  frontend_->StartDraining();
  const auto start = std::chrono::steady_clock::now();
  // Requests already being decoded still reach their queue before the queues drain.
  frontend_->AwaitPrepared(start + std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000)));
  const double grace_left_s = std::max(
      0.0,
      grace_s - std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  drain_result_ = repository_->Drain(static_cast<int64_t>(grace_left_s * 1e6));
  // Every queued request has been answered; what is left are calls finishing their writes.
  const double left_s =
      grace_s - std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(std::max(left_s, 0.5) * 1000)));
  if (admin_server_) admin_server_->Shutdown(std::chrono::system_clock::now());
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
  StopWatching();
  if (server_) server_->Wait();
  if (admin_server_) admin_server_->Wait();
}

}  // namespace vitq::server
