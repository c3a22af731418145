// Variant: one loaded artifact of a served model (e.g. fmnist-deit at w8a8) with its own
// batching queue. Requests (already preprocessed images) go into the queue; the batcher's worker
// concatenates a batch, runs the engine once and hands each request its rows of logits.
//
//   auto variant = Variant::Load("fmnist-deit", variant_config, batching, &metrics);
//   (*variant)->Submit(std::move(request), [](absl::Status s, InferOutput out) { ... });
//
// A Variant is shared (shared_ptr): the model's routing table and every request routed to it
// hold a reference, so a variant removed from routing stays alive until its last request is
// answered (hot switch). Load warms the engine up (every batch size the batcher can form is
// run once, so oneDNN primitives exist before the first request) before returning.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backends/model.h"
#include "preprocessing/image.h"
#include "server/batcher.h"
#include "server/metrics.h"
#include "server/repository_config.h"
#include "server/variant_stats.h"

namespace vitq::server {

// One request's input: `num_images` preprocessed images, (num_images, C, H, W) row-major.
struct InferInput {
  int num_images = 1;
  std::vector<float> images;
  int64_t deadline_us = 0;  // absolute, on Clock::Real(); 0 = the variant's default timeout
  int priority = 0;
  std::function<bool()> is_cancelled;  // cheap, non-blocking; empty = never
  // A shadow copy: a batch of only such requests waits on the engine thread while real work is
  // queued there, so that it never delays real requests.
  bool background = false;
};

// One request's answer.
struct InferOutput {
  std::vector<float> logits;  // (num_images, num_classes)
  int64_t queue_us = 0;       // waiting in the queue
  int64_t compute_us = 0;     // forward pass of the batch it ran in
  int batch_images = 0;       // size of that batch
};

// Called exactly once per accepted request, on the batcher's worker thread (or on the caller's
// thread when Submit rejects it). `output` is meaningful only when `status` is OK.
using InferCallback = std::function<void(absl::Status status, InferOutput output)>;

class Variant {
 public:
  // Loads `config.path` (checkpoint with card, or quantized artifact), checks the model fits
  // `model_name`'s other settings, starts the batcher and warms up. Errors name the model, the
  // variant and the file. `metrics` may be null (tests); else it must outlive the variant.
  static absl::StatusOr<std::shared_ptr<Variant>> Load(const std::string& model_name,
                                                       const VariantConfig& config,
                                                       const BatcherOptions& batching,
                                                       ServerMetrics* metrics,
                                                       int engine_threads = 0);

  // Same from a model already built (tests, random presets).
  // `artifact_sha256` labels the metrics (empty for models not read from a file);
  // `engine_threads` > 0 sets the OpenMP threads of each forward pass.
  static absl::StatusOr<std::shared_ptr<Variant>> FromModel(
      const std::string& model_name, const VariantConfig& config, const BatcherOptions& batching,
      std::unique_ptr<Model> model, ServerMetrics* metrics, std::string artifact_sha256 = "",
      int engine_threads = 0);

  // Drains the queue (runs what is queued) and joins the worker.
  ~Variant();
  Variant(const Variant&) = delete;
  Variant& operator=(const Variant&) = delete;

  // Queues a request. Returns the rejection (the callback is then NOT called):
  // INVALID_ARGUMENT (image count or size wrong, priority out of range), RESOURCE_EXHAUSTED
  // (queue full), DEADLINE_EXCEEDED (already expired), UNAVAILABLE (draining). On OK the
  // callback is called exactly once.
  absl::Status Submit(InferInput input, InferCallback done);

  // Stops accepting, runs what is queued for up to `grace_us`, then answers the rest UNAVAILABLE.
  absl::Status Drain(int64_t grace_us);

  const std::string& model_name() const { return model_name_; }
  const std::string& name() const { return config_.name; }
  const VariantConfig& config() const { return config_; }
  const ModelConfig& model_config() const { return model_->config(); }
  // Elements of one image: C·H·W.
  int64_t image_elements() const;
  int64_t num_classes() const { return model_->config().num_classes; }
  const std::vector<std::string>& class_names() const { return class_names_; }
  const preprocessing::PreprocessOptions& preprocess() const { return preprocess_; }
  const std::string& precision() const { return precision_; }
  const std::string& artifact_sha256() const { return artifact_sha256_; }
  int64_t weight_bytes() const { return weight_bytes_; }
  int max_batch_size() const { return batching_.max_batch_size; }
  int priority_levels() const { return batching_.priority_levels; }
  int queue_depth() const { return batcher_->QueueDepth(); }
  const BatcherOptions& batching() const { return batching_; }
  // Live figures for Admin Stats and the load-adaptive controller (thread-safe).
  VariantStats& stats() const { return stats_; }
  // Its Prometheus series (members null without metrics).
  const VariantMetrics& series() const { return series_; }

 private:
  struct Job {
    InferInput input;
    InferOutput output;
  };
  using JobBatcher = Batcher<Job>;
  class Observer;

  Variant(std::string model_name, VariantConfig config, BatcherOptions batching,
          std::unique_ptr<Model> model, ServerMetrics* metrics);
  absl::Status Start();
  absl::Status WarmUp();
  using SteadyTime = std::chrono::steady_clock::time_point;
  // A batch of shadow copies gives up waiting for idle engine time after this long at most.
  static constexpr int64_t kBackgroundWaitLimitUs = 10 * 1000000;
  struct EngineRun {
    bool ran = false;  // false: a background pass that found no idle engine time
    absl::StatusOr<Tensor> logits = absl::InternalError("not run");
    int64_t wait_us = 0;     // waiting for the engine thread
    int64_t compute_us = 0;  // the forward pass
  };
  // One forward pass on the process's engine thread (server/engine_thread.h); in the background
  // (after every real request) when `background_deadline` is set.
  EngineRun RunEngine(const Tensor& images, std::optional<SteadyTime> background_deadline) const;
  SteadyTime EarliestDeadline(
      const std::vector<std::unique_ptr<JobBatcher::TaskType>>& batch) const;
  // Real (not shadow) requests accepted and not yet answered: here, and for the engine thread.
  void RealRequestArrived();
  void RealRequestLeft();
  void StopBackgroundWaits();
  void RunBatch(std::vector<std::unique_ptr<JobBatcher::TaskType>>& batch);

  const std::string model_name_;
  const VariantConfig config_;
  BatcherOptions batching_;
  std::unique_ptr<Model> model_;
  ServerMetrics* metrics_;
  VariantMetrics series_;
  mutable VariantStats stats_;
  std::vector<std::string> class_names_;
  preprocessing::PreprocessOptions preprocess_;
  std::string precision_;
  std::string artifact_sha256_;
  int64_t weight_bytes_ = 0;
  int engine_threads_ = 0;
  std::atomic<int64_t> real_pending_{0};
  std::atomic<bool> draining_{false};  // no more background waits (Drain, destruction)
  std::unique_ptr<Observer> observer_;
  std::unique_ptr<JobBatcher> batcher_;  // last: its worker uses everything above
};

// Hex SHA-256 of a file's bytes. NOT_FOUND when unreadable.
absl::StatusOr<std::string> FileSha256(const std::string& path);

}  // namespace vitq::server
