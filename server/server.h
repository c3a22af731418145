// VitqServer: the gRPC server around a model repository — KServe v2 (inference), vitq.v1
// Classifier, gRPC health (grpc.health.v1, per model too), server reflection — and the
// Prometheus endpoint, with graceful drain.
//
//   auto server = VitqServer::Start(config);              // loads, warms up, binds, serves
//   ... (*server)->Drain();                                // SIGTERM: see Drain
//
// Health: the overall service "" and one service per model, "vitq.model.<name>", are SERVING
// once every variant is loaded and warmed up, NOT_SERVING from the start of a drain.
//
// Hot switch: the Admin service (server.admin.listen, bearer token) changes routing and loads or
// unloads variants; ReloadConfig (Admin, SIGHUP, or a change of the file with watch_config)
// applies the config file's model section without dropping a request.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "server/adaptive_runner.h"
#include "server/admin_service.h"
#include "server/classifier_service.h"
#include "server/frontend.h"
#include "server/inference_service.h"
#include "server/metrics.h"
#include "server/model_repository.h"
#include "server/repository_config.h"

namespace vitq::server {

class VitqServer {
 public:
  // Loads every variant, then binds config.listen and config.metrics_listen (empty: no metrics
  // endpoint). A port of 0 picks a free one; see port() / metrics_port(). Errors name the file,
  // the model or the address.
  static absl::StatusOr<std::unique_ptr<VitqServer>> Start(const ServerConfig& config);
  // Same over a repository built elsewhere (tests).
  static absl::StatusOr<std::unique_ptr<VitqServer>> StartWith(
      const ServerConfig& config, std::unique_ptr<ModelRepository> repo,
      std::unique_ptr<ServerMetrics> metrics);

  // Drains (with the config's grace) if Drain was not called.
  ~VitqServer();

  // Graceful stop: health NOT_SERVING, new requests UNAVAILABLE, queued requests run for up to
  // `grace_s` seconds (the rest answered UNAVAILABLE), in-flight calls finish, then the gRPC
  // server shuts down. Returns true when nothing had to be cut short. Idempotent.
  bool Drain(double grace_s);

  // Blocks until Drain has finished.
  void Wait();

  // Re-reads the config file (config.source_path) and applies its models section (see
  // ModelRepository::Reload). An unreadable or invalid file, or a variant that fails to load,
  // changes nothing. Changes to the server section need a restart and are reported as such.
  absl::StatusOr<std::vector<std::string>> ReloadConfig();

  int port() const { return port_; }
  int admin_port() const { return admin_port_; }
  int metrics_port() const { return metrics_ ? metrics_->port() : 0; }
  ModelRepository& repository() { return *repository_; }
  ServerMetrics& metrics() { return *metrics_; }

 private:
  VitqServer() = default;
  absl::Status Build();
  absl::Status StartAdmin(const std::shared_ptr<grpc::ServerCredentials>& credentials);
  void SetServing(bool serving);
  // Polls the config file and reloads when its contents change (server.watch_config).
  void WatchConfig();
  void StopWatching();

  ServerConfig config_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<ModelRepository> repository_;
  std::unique_ptr<Frontend> frontend_;
  std::unique_ptr<InferenceService> inference_service_;
  std::unique_ptr<ClassifierService> classifier_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<grpc::Server> admin_server_;
  int admin_port_ = 0;
  absl::Mutex reload_mu_;  // one reload at a time (SIGHUP, Admin, file watcher)
  absl::Mutex health_mu_;
  std::set<std::string> health_models_ ABSL_GUARDED_BY(health_mu_);  // published per-model names
  absl::Mutex watch_mu_;
  bool stop_watching_ ABSL_GUARDED_BY(watch_mu_) = false;
  std::thread watcher_;
  std::unique_ptr<AdaptiveRunner> adaptive_;  // models with an adaptive policy
  absl::Mutex drain_mu_;
  bool drained_ ABSL_GUARDED_BY(drain_mu_) = false;
  bool drain_result_ ABSL_GUARDED_BY(drain_mu_) = true;
};

// Reads a whole file (PEM certificates). NOT_FOUND naming it when unreadable.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace vitq::server
