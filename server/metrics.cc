#include "server/metrics.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"

namespace vitq::server {
namespace {

// Latencies from 100 µs to 10 s: the server's requests range from sub-millisecond (28×28 models)
// to seconds (large batches of 224×224 models under load).
// Built once: Family::Add copies them only when it creates a new series.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* const buckets = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};
  return *buckets;
}

const prometheus::Histogram::BucketBoundaries& BatchSizeBuckets() {
  static const auto* const buckets =
      new prometheus::Histogram::BucketBoundaries{1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128};
  return *buckets;
}

// Cosine similarity of logits: quantized variants sit just below 1.
const prometheus::Histogram::BucketBoundaries& CosineBuckets() {
  static const auto* const buckets = new prometheus::Histogram::BucketBoundaries{
      0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999};
  return *buckets;
}

// KL divergence in nats between the reference's and the variant's class distributions.
const prometheus::Histogram::BucketBoundaries& KlBuckets() {
  static const auto* const buckets = new prometheus::Histogram::BucketBoundaries{
      1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0};
  return *buckets;
}

}  // namespace

const char* ApiName(Api api) {
  switch (api) {
    case Api::kKserve:
      return "kserve";
    case Api::kClassify:
      return "classify";
    case Api::kClassifyStream:
      return "classify_stream";
  }
  return "unknown";
}

const char* StatusCodeName(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return "OK";
    case absl::StatusCode::kCancelled:
      return "CANCELLED";
    case absl::StatusCode::kUnknown:
      return "UNKNOWN";
    case absl::StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case absl::StatusCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case absl::StatusCode::kNotFound:
      return "NOT_FOUND";
    case absl::StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case absl::StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case absl::StatusCode::kAborted:
      return "ABORTED";
    case absl::StatusCode::kOutOfRange:
      return "OUT_OF_RANGE";
    case absl::StatusCode::kUnimplemented:
      return "UNIMPLEMENTED";
    case absl::StatusCode::kInternal:
      return "INTERNAL";
    case absl::StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case absl::StatusCode::kDataLoss:
      return "DATA_LOSS";
    case absl::StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("vitq_requests_total")
                    .Help("Finished inference requests by model, variant, API and gRPC status code")
                    .Register(*registry_)),
      request_seconds_(prometheus::BuildHistogram()
                           .Name("vitq_request_duration_seconds")
                           .Help("Server-side latency of successful inference requests, from "
                                 "arrival to response")
                           .Register(*registry_)),
      preprocess_seconds_(prometheus::BuildHistogram()
                              .Name("vitq_preprocess_duration_seconds")
                              .Help("Decoding and preprocessing of one request's images")
                              .Register(*registry_)),
      queue_seconds_(prometheus::BuildHistogram()
                         .Name("vitq_queue_duration_seconds")
                         .Help("Time requests waited in their variant's batching queue")
                         .Register(*registry_)),
      compute_seconds_(prometheus::BuildHistogram()
                           .Name("vitq_compute_duration_seconds")
                           .Help("Model forward pass of one batch")
                           .Register(*registry_)),
      batch_size_(prometheus::BuildHistogram()
                      .Name("vitq_batch_size")
                      .Help("Images per batch run by the engine")
                      .Register(*registry_)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("vitq_queue_depth")
                       .Help("Requests waiting in the variant's batching queue")
                       .Register(*registry_)),
      variant_info_(prometheus::BuildGauge()
                        .Name("vitq_variant_info")
                        .Help("1 for every loaded variant; labels describe it")
                        .Register(*registry_)),
      build_info_(prometheus::BuildGauge()
                      .Name("vitq_build_info")
                      .Help("1; labels: vitq and gRPC versions")
                      .Register(*registry_)),
      routing_weight_(prometheus::BuildGauge()
                          .Name("vitq_routing_weight")
                          .Help("Share of the model's routed traffic the variant gets, in [0, 1]")
                          .Register(*registry_)),
      routing_generation_(prometheus::BuildGauge()
                              .Name("vitq_routing_generation")
                              .Help("Generation of the model's routing table in force")
                              .Register(*registry_)),
      labeled_(prometheus::BuildCounter()
                   .Name("vitq_labeled_total")
                   .Help("Requests with a true label (request label or Feedback), by whether "
                         "the variant's top-1 class was right")
                   .Register(*registry_)),
      shadow_comparisons_(prometheus::BuildCounter()
                              .Name("vitq_shadow_comparisons_total")
                              .Help("Images compared with the model's reference variant, by "
                                    "whether the top-1 classes agreed")
                              .Register(*registry_)),
      shadow_dropped_(prometheus::BuildCounter()
                          .Name("vitq_shadow_dropped_total")
                          .Help("Sampled requests not copied to the reference: it was busy")
                          .Register(*registry_)),
      shadow_agreement_(prometheus::BuildGauge()
                            .Name("vitq_shadow_agreement_ratio")
                            .Help("Top-1 agreement with the reference since the variant loaded")
                            .Register(*registry_)),
      shadow_cosine_(prometheus::BuildHistogram()
                         .Name("vitq_shadow_logit_cosine")
                         .Help("Cosine similarity of the variant's logits to the reference's")
                         .Register(*registry_)),
      shadow_kl_(prometheus::BuildHistogram()
                     .Name("vitq_shadow_kl_divergence")
                     .Help("KL(reference || variant) of the class probabilities, nats")
                     .Register(*registry_)),
      admin_changes_(prometheus::BuildCounter()
                         .Name("vitq_admin_changes_total")
                         .Help("Admin changes and config reloads, by operation and outcome")
                         .Register(*registry_)),
      adaptive_switches_(prometheus::BuildCounter()
                             .Name("vitq_adaptive_switches_total")
                             .Help("Moves of a model's traffic by the load-adaptive controller")
                             .Register(*registry_)) {
  build_info_.Add({{"version", VITQ_VERSION}, {"grpc_version", grpc::Version()}}).Set(1);
}

absl::Status ServerMetrics::Serve(const std::string& address) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
      MetricsHttpServer::Start(address, registry_);
  if (!http.ok()) return http.status();
  http_ = std::move(*http);
  return absl::OkStatus();
}

int ServerMetrics::port() const { return http_ ? http_->port() : 0; }

VariantMetrics ServerMetrics::ForVariant(const std::string& model, const std::string& variant,
                                         const VariantInfoLabels& info) {
  const prometheus::Labels labels{{"model", model}, {"variant", variant}};
  auto with = [&labels](const char* key, const char* value) {
    prometheus::Labels l = labels;
    l[key] = value;
    return l;
  };
  VariantMetrics m;
  m.queue_seconds = &queue_seconds_.Add(labels, LatencyBuckets());
  m.compute_seconds = &compute_seconds_.Add(labels, LatencyBuckets());
  m.batch_size = &batch_size_.Add(labels, BatchSizeBuckets());
  m.queue_depth = &queue_depth_.Add(labels);
  prometheus::Labels info_labels = labels;
  info_labels["arch"] = info.arch;
  info_labels["precision"] = info.precision;
  info_labels["artifact_sha256"] = info.artifact_sha256;
  m.info = &variant_info_.Add(info_labels);
  m.info->Set(1);
  m.routing_weight = &routing_weight_.Add(labels);
  m.labeled_correct = &labeled_.Add(with("result", "correct"));
  m.labeled_wrong = &labeled_.Add(with("result", "wrong"));
  m.shadow_agree = &shadow_comparisons_.Add(with("result", "agree"));
  m.shadow_disagree = &shadow_comparisons_.Add(with("result", "disagree"));
  m.shadow_dropped = &shadow_dropped_.Add(labels);
  m.shadow_agreement = &shadow_agreement_.Add(labels);
  m.shadow_cosine = &shadow_cosine_.Add(labels, CosineBuckets());
  m.shadow_kl = &shadow_kl_.Add(labels, KlBuckets());
  absl::MutexLock lock(&series_mu_);
  for (const void* series : std::initializer_list<const void*>{
           m.queue_seconds, m.compute_seconds, m.batch_size, m.queue_depth, m.info,
           m.routing_weight, m.labeled_correct, m.labeled_wrong, m.shadow_agree, m.shadow_disagree,
           m.shadow_dropped, m.shadow_agreement, m.shadow_cosine, m.shadow_kl}) {
    ++series_users_[series];
  }
  return m;
}

void ServerMetrics::RemoveVariant(const VariantMetrics& series) {
  absl::MutexLock lock(&series_mu_);
  // True when `metric` has no other user left, i.e. it may be removed from its family.
  auto last_user = [this](const void* metric) ABSL_EXCLUSIVE_LOCKS_REQUIRED(series_mu_) {
    auto it = series_users_.find(metric);
    if (it == series_users_.end()) return false;
    if (--it->second > 0) return false;
    series_users_.erase(it);
    return true;
  };
  auto remove = [&last_user](auto& family, auto* metric) {
    if (metric && last_user(metric)) family.Remove(metric);
  };
  remove(queue_seconds_, series.queue_seconds);
  remove(compute_seconds_, series.compute_seconds);
  remove(batch_size_, series.batch_size);
  remove(queue_depth_, series.queue_depth);
  remove(variant_info_, series.info);
  remove(routing_weight_, series.routing_weight);
  remove(labeled_, series.labeled_correct);
  remove(labeled_, series.labeled_wrong);
  remove(shadow_comparisons_, series.shadow_agree);
  remove(shadow_comparisons_, series.shadow_disagree);
  remove(shadow_dropped_, series.shadow_dropped);
  remove(shadow_agreement_, series.shadow_agreement);
  remove(shadow_cosine_, series.shadow_cosine);
  remove(shadow_kl_, series.shadow_kl);
}

void ServerMetrics::OnAdminChange(const std::string& operation, absl::StatusCode code) {
  admin_changes_.Add({{"operation", operation}, {"code", StatusCodeName(code)}}).Increment();
}

void ServerMetrics::SetRoutingGeneration(const std::string& model, int64_t generation) {
  routing_generation_.Add({{"model", model}}).Set(static_cast<double>(generation));
}

void ServerMetrics::OnAdaptiveSwitch(const std::string& model, const std::string& from,
                                     const std::string& to) {
  adaptive_switches_.Add({{"model", model}, {"from", from}, {"to", to}}).Increment();
}

void ServerMetrics::OnRequest(Api api, const std::string& model, const std::string& variant,
                              absl::StatusCode code, double seconds) {
  requests_
      .Add({{"model", model},
            {"variant", variant},
            {"api", ApiName(api)},
            {"code", StatusCodeName(code)}})
      .Increment();
  if (code == absl::StatusCode::kOk) {
    request_seconds_
        .Add({{"model", model}, {"variant", variant}, {"api", ApiName(api)}}, LatencyBuckets())
        .Observe(seconds);
  }
}

void ServerMetrics::OnPreprocess(const std::string& model, double seconds) {
  preprocess_seconds_.Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}

}  // namespace vitq::server
