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

}  // namespace

const char* ApiName(Api api) {
  switch (api) {
    case Api::kKserve: return "kserve";
    case Api::kClassify: return "classify";
    case Api::kClassifyStream: return "classify_stream";
  }
  return "unknown";
}

const char* StatusCodeName(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return "OK";
    case absl::StatusCode::kCancelled: return "CANCELLED";
    case absl::StatusCode::kUnknown: return "UNKNOWN";
    case absl::StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case absl::StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case absl::StatusCode::kNotFound: return "NOT_FOUND";
    case absl::StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case absl::StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case absl::StatusCode::kAborted: return "ABORTED";
    case absl::StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case absl::StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case absl::StatusCode::kInternal: return "INTERNAL";
    case absl::StatusCode::kUnavailable: return "UNAVAILABLE";
    case absl::StatusCode::kDataLoss: return "DATA_LOSS";
    case absl::StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
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
  return m;
}

void ServerMetrics::RemoveVariant(const VariantMetrics& series) {
  queue_seconds_.Remove(series.queue_seconds);
  compute_seconds_.Remove(series.compute_seconds);
  batch_size_.Remove(series.batch_size);
  queue_depth_.Remove(series.queue_depth);
  variant_info_.Remove(series.info);
}

void ServerMetrics::OnRequest(Api api, const std::string& model, const std::string& variant,
                              absl::StatusCode code, double seconds) {
  requests_
      .Add({{"model", model}, {"variant", variant}, {"api", ApiName(api)},
            {"code", StatusCodeName(code)}})
      .Increment();
  if (code == absl::StatusCode::kOk) {
    request_seconds_.Add({{"model", model}, {"variant", variant}, {"api", ApiName(api)}},
                         LatencyBuckets())
        .Observe(seconds);
  }
}

void ServerMetrics::OnPreprocess(const std::string& model, double seconds) {
  preprocess_seconds_.Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}

}  // namespace vitq::server
