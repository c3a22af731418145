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
#include "absl/status/statusor.h"
#include "server/feedback_log.h"
#include "server/metrics.h"
#include "server/model_repository.h"

namespace vitq::server {

struct FrontendRequest {
  Api api = Api::kClassify;
  std::string model;
  std::string variant;      // empty: the router decides
  std::string routing_key;  // sticky A/B assignment; empty: random by weight
  std::string request_id;   // non-empty: its answer is remembered for Feedback
  // True classes, when the client knows them: empty, or one per image, comma-separated; each a
  // class index or a class name. Counted in the labeled accuracy of the variant that answers.
  std::string labels;
  // The input, exactly one of:
  std::vector<std::span<const uint8_t>> encoded_images;  // must stay valid during Infer
  std::vector<float> tensor;                             // preprocessed, (N, C, H, W)
  std::vector<int64_t> tensor_shape;                     // [N, C, H, W] or [C, H, W]
  int64_t timeout_us = 0;                                // 0: none of its own
  // The gRPC deadline of the call (system clock); max() when there is none.
  std::chrono::system_clock::time_point grpc_deadline =
      std::chrono::system_clock::time_point::max();
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
  std::vector<int64_t> true_classes;          // parsed FrontendRequest::labels (empty: none)
  std::shared_ptr<const RoutingTable> table;  // that routed it (shadow settings)
};

// What Feedback found: the request's model and variant and whether its top-1 was right.
struct FeedbackOutcome {
  std::string model;
  std::string variant;
  bool correct = false;
};

// A request id unique to this process and distinct across processes (random prefix).
std::string NewRequestId();

// Called exactly once per Infer, possibly on the calling thread (errors found before queueing),
// else on the variant's batcher thread.
using FrontendCallback = std::function<void(absl::Status, FrontendResult)>;

class Frontend {
 public:
  // `metrics` may be null. Both must outlive the frontend.
  Frontend(const ModelRepository* repository, ServerMetrics* metrics)
      : repository_(repository), metrics_(metrics) {}

  void Infer(FrontendRequest request, FrontendCallback done);

  // The true label(s) of an answered request (Classifier.Feedback): counted once for the variant
  // that answered. NOT_FOUND (unknown, expired or already labeled), INVALID_ARGUMENT (label).
  absl::StatusOr<FeedbackOutcome> Feedback(const std::string& request_id,
                                           const std::string& labels);

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
  absl::Status Preprocess(FrontendRequest& request, const Variant& variant, InferInput& input,
                          int64_t& preprocess_us);
  void Finish(const FrontendRequest& request, absl::Status status, FrontendResult result,
              const FrontendCallback& done);
  // After an answer: labeled accuracy, the feedback log, and the shadow copy (if sampled).
  void Account(const FrontendRequest& request, const FrontendResult& result);
  // Runs `images` on the table's shadow reference, off the response path, and compares its
  // logits with `logits` for `compared`'s agreement metrics. Dropped when the reference is busy.
  void Shadow(const std::shared_ptr<const RoutingTable>& table, std::shared_ptr<Variant> compared,
              int num_images, std::vector<float> images, std::vector<float> logits);

  const ModelRepository* repository_;
  ServerMetrics* metrics_;
  std::atomic<bool> draining_{false};
  std::atomic<int> preparing_{0};  // requests inside Infer before Submit
  FeedbackLog feedback_;
};

}  // namespace vitq::server
