// The server's configuration file (YAML): server settings and the model repository, i.e.
// models → variants (one artifact each: a bit-width configuration) → routing weights, batching
// and shadow traffic. Parsing validates everything that can be checked without loading models
// and names the offending entry; relative paths resolve against the config file's folder.
//
//   server:
//     listen: 0.0.0.0:8001          # gRPC address; port 0 picks a free port
//     metrics_listen: 0.0.0.0:9090  # Prometheus /metrics; empty disables
//     max_message_bytes: 16777216   # largest request or response, bytes
//     drain_grace_s: 20             # SIGTERM: finish queued and in-flight requests for this long
//     engine_threads: 0             # OpenMP threads per forward pass; 0 = OMP_NUM_THREADS or all
//     tls: {cert: server.pem, key: server.key, client_ca: ca.pem}   # optional; client_ca = mTLS
//     admin: {listen: 127.0.0.1:8002, token_file: admin.token}  # vitq.v1.Admin; optional
//     watch_config: false           # reload this file when it changes (SIGHUP always reloads)
//   models:
//     - name: fmnist-deit
//       labels: ../config/labels/fashion-mnist.txt
//       batching: {max_batch_size: 8, preferred_batch_sizes: [8], max_queue_delay_us: 2000,
//                  max_queue_size: 256, default_timeout_us: 0, priority_levels: 1}
//       variants:
//         - {name: fp32, path: ../models/fmnist-deit.safetensors, precision: fp32, weight: 0.9}
//         - {name: w8a8, path: ../models/fmnist-deit.w8a8.safetensors, weight: 0.1}
//       shadow: {variant: fp32, fraction: 0.05}   # reference: gets 5% copies, compared
//       adaptive: {variants: [fp32, w8a8], p99_slo_ms: 50, agreement_floor: 0.98}
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/adaptive.h"
#include "server/batcher.h"

namespace vitq::server {

struct VariantConfig {
  std::string name;    // unique within its model; the KServe model_version selects it
  std::string path;    // checkpoint or quantized artifact (.safetensors), resolved
  std::string preset;  // instead of path: a preset shape with random weights (load tests)
  std::string arch;    // preset for a bare checkpoint without model card (optional)
  std::string precision = "fp32";  // float layers: fp32 | bf16 (integer layers keep their bits)
  double weight = 1.0;             // routing share, >= 0; shares are normalised per model
};

struct ShadowConfig {
  std::string variant;    // the reference: gets a copy of sampled requests; its answers are
                          // compared with the variant's that answered, never returned
  double fraction = 0.0;  // of requests copied, in [0, 1]
};

struct ModelEntry {
  std::string name;
  std::string labels;  // class names file, resolved (optional)
  BatcherOptions batching;
  std::vector<VariantConfig> variants;
  std::optional<ShadowConfig> shadow;
  std::optional<AdaptivePolicy> adaptive;  // load-adaptive precision; needs `shadow`
};

// Transport security of the gRPC port. All empty = plaintext.
struct TlsConfig {
  std::string cert;       // PEM server certificate chain, resolved
  std::string key;        // PEM private key of `cert`, resolved
  std::string client_ca;  // PEM CAs that sign client certificates: set = mutual TLS (required)
};

// The vitq.v1.Admin service: its own port, a bearer token, the main port's TLS.
struct AdminConfig {
  std::string listen;      // HOST:PORT; empty = no admin service
  std::string token_file;  // file holding the bearer token, resolved; else $VITQ_ADMIN_TOKEN
};

struct ServerConfig {
  std::string source_path;  // the file it was read from (empty when parsed from text)
  std::string listen = "0.0.0.0:8001";
  std::string metrics_listen = "0.0.0.0:9090";
  int64_t max_message_bytes = 16 << 20;
  double drain_grace_s = 20;
  int engine_threads = 0;  // OpenMP threads per forward pass; 0 = OMP_NUM_THREADS or all cores
  TlsConfig tls;
  AdminConfig admin;
  bool watch_config = false;  // reload when the file's contents change
  std::vector<ModelEntry> models;
};

// INVALID_ARGUMENT naming the entry ("models[0] 'fmnist-deit': variants[1]: weight must be >= 0").
absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text,
                                               const std::string& config_dir);
absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path);

}  // namespace vitq::server
