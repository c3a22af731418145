// Prometheus metrics of the server (prometheus-cpp), served at http://<metrics_listen>/metrics.
// Every name, label and unit is listed in docs/METRICS.md; keep the two in sync.
//
// Families are registered once; a variant fetches its own series (VariantMetrics) when it is
// loaded, so the request path only touches pre-resolved counters and histograms. Requests that
// fail before a variant is chosen (unknown model, bad input) are counted with variant="".
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/metrics_http.h"

namespace vitq::server {

// Which gRPC API a request came through: label `api`.
enum class Api { kKserve, kClassify, kClassifyStream };
const char* ApiName(Api api);

// Static facts of a loaded variant: the labels of vitq_variant_info.
struct VariantInfoLabels {
  std::string arch;             // "deit" | "swin"
  std::string precision;        // "fp32", "bf16", "w8a8", ...
  std::string artifact_sha256;  // of the file it was loaded from
};

// The series of one variant, resolved once.
struct VariantMetrics {
  prometheus::Histogram* queue_seconds = nullptr;
  prometheus::Histogram* compute_seconds = nullptr;  // per batch
  prometheus::Histogram* batch_size = nullptr;       // images per batch
  prometheus::Gauge* queue_depth = nullptr;
  prometheus::Gauge* info = nullptr;               // vitq_variant_info, 1 while loaded
  prometheus::Gauge* routing_weight = nullptr;     // normalised routing share
  prometheus::Counter* labeled_correct = nullptr;  // labeled requests it got right (top-1)
  prometheus::Counter* labeled_wrong = nullptr;
  prometheus::Counter* shadow_agree = nullptr;  // top-1 equal to the reference's
  prometheus::Counter* shadow_disagree = nullptr;
  prometheus::Counter* shadow_dropped = nullptr;   // copies not run: the reference was busy
  prometheus::Gauge* shadow_agreement = nullptr;   // agree / compared since it was loaded
  prometheus::Histogram* shadow_cosine = nullptr;  // cosine of its logits to the reference's
  prometheus::Histogram* shadow_kl = nullptr;      // KL(reference || it) of the softmaxes, nats
};

class ServerMetrics {
 public:
  ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // Serves /metrics on `address` ("host:port"; port 0 picks a free one). INVALID_ARGUMENT or
  // UNAVAILABLE (port taken) with the address in the message.
  absl::Status Serve(const std::string& address);
  // The port /metrics is served on, 0 when not serving.
  int port() const;

  VariantMetrics ForVariant(const std::string& model, const std::string& variant,
                            const VariantInfoLabels& info);
  // Removes the variant's series once no loaded variant uses them (a variant replaced by a new
  // load of the same name shares its series with its successor until it is freed).
  void RemoveVariant(const VariantMetrics& series);

  // An Admin change or a config reload: `operation` ("set_routing", "reload", ...) and its code.
  void OnAdminChange(const std::string& operation, absl::StatusCode code);
  // Routing generation now in force for `model`.
  void SetRoutingGeneration(const std::string& model, int64_t generation);
  // The load-adaptive controller moved `model`'s traffic from one variant to another.
  void OnAdaptiveSwitch(const std::string& model, const std::string& from, const std::string& to);

  // One finished request: counts it by code and, when it succeeded, observes its latency.
  void OnRequest(Api api, const std::string& model, const std::string& variant,
                 absl::StatusCode code, double seconds);
  void OnPreprocess(const std::string& model, double seconds);

  prometheus::Registry& registry() { return *registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsHttpServer> http_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_seconds_;
  prometheus::Family<prometheus::Histogram>& preprocess_seconds_;
  prometheus::Family<prometheus::Histogram>& queue_seconds_;
  prometheus::Family<prometheus::Histogram>& compute_seconds_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Gauge>& variant_info_;
  prometheus::Family<prometheus::Gauge>& build_info_;
  prometheus::Family<prometheus::Gauge>& routing_weight_;
  prometheus::Family<prometheus::Gauge>& routing_generation_;
  prometheus::Family<prometheus::Counter>& labeled_;
  prometheus::Family<prometheus::Counter>& shadow_comparisons_;
  prometheus::Family<prometheus::Counter>& shadow_dropped_;
  prometheus::Family<prometheus::Gauge>& shadow_agreement_;
  prometheus::Family<prometheus::Histogram>& shadow_cosine_;
  prometheus::Family<prometheus::Histogram>& shadow_kl_;
  prometheus::Family<prometheus::Counter>& admin_changes_;
  prometheus::Family<prometheus::Counter>& adaptive_switches_;
  // How many loaded variants use each per-variant series (see RemoveVariant).
  absl::Mutex series_mu_;
  std::map<const void*, int> series_users_ ABSL_GUARDED_BY(series_mu_);
};

// gRPC's canonical name of a status code ("RESOURCE_EXHAUSTED"), the `code` label.
const char* StatusCodeName(absl::StatusCode code);

}  // namespace vitq::server
