// Frontend: what every inference API (KServe ModelInfer, Classify, ClassifyStream) does with a
// request once its protocol-specific fields are parsed: refuse while draining, route to a
// variant, decode and preprocess images, turn timeouts into a deadline, queue it on the variant,
// and count the outcome in the metrics. The services only translate protobuf to and from
// FrontendRequest / FrontendResult.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/metrics.h"
#include "server/model_repository.h"

namespace vitq::server {

struct FrontendRequest {
  Api api = Api::kClassify;
  std::string model;
  std::string variant;      // empty: the router decides
  std::string routing_key;  // sticky A/B assignment; empty: random by weight
  // The input, exactly one of:
  std::vector<std::span<const uint8_t>> encoded_images;  // must stay valid during Infer
  std::vector<float> tensor;                             // preprocessed, (N, C, H, W)
  std::vector<int64_t> tensor_shape;                     // [N, C, H, W] or [C, H, W]
  int64_t timeout_us = 0;  // 0: none of its own
  // The gRPC deadline of the call (system clock); max() when there is none.
  std::chrono::system_clock::time_point grpc_deadline = std::chrono::system_clock::time_point::max();
  int priority = 0;
  std::function<bool()> is_cancelled;
  std::chrono::steady_clock::time_point arrival = std::chrono::steady_clock::now();
};

struct FrontendResult {
  std::shared_ptr<Variant> variant;  // who answered (null when the request failed before routing)
  int64_t routing_generation = 0;
  int num_images = 0;
  InferOutput output;  // logits (num_images, classes) and queue / compute times
  int64_t preprocess_us = 0;
  int64_t total_us = 0;
};

// Called exactly once per Infer, possibly on the calling thread (errors found before queueing),
// else on the variant's batcher thread.
using FrontendCallback = std::function<void(absl::Status, FrontendResult)>;

class Frontend {
 public:
  // `metrics` may be null. Both must outlive the frontend.
  Frontend(const ModelRepository* repository, ServerMetrics* metrics)
      : repository_(repository), metrics_(metrics) {}

  void Infer(FrontendRequest request, FrontendCallback done);

  // Counts a request the service refused before Infer (malformed protobuf fields).
  void CountRejected(const FrontendRequest& request, const absl::Status& status);

  // From now on every request is refused with UNAVAILABLE.
  void StartDraining() { draining_ = true; }
  // Waits (polling, drain only) until no request is between arrival and its queue; false if
  // `deadline` came first.
  bool AwaitPrepared(std::chrono::steady_clock::time_point deadline) const;
  bool draining() const { return draining_; }
  const ModelRepository& repository() const { return *repository_; }

 private:
  absl::Status Prepare(FrontendRequest& request, FrontendResult& result, InferInput& input);
  absl::Status Preprocess(FrontendRequest& request, const Variant& variant,
                          InferInput& input, int64_t& preprocess_us);
  void Finish(const FrontendRequest& request, absl::Status status, FrontendResult result,
              const FrontendCallback& done);

  const ModelRepository* repository_;
  ServerMetrics* metrics_;
  std::atomic<bool> draining_{false};
  std::atomic<int> preparing_{0};  // requests inside Infer before Submit
};

}  // namespace vitq::server
