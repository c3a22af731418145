// Runs the load-adaptive controller (adaptive.h) of every model that has a policy: once per
// interval it measures the model's p99 over that interval and its variants' agreement with the
// shadow reference, steps the controller, and applies a move as a routing change (all traffic to
// the chosen variant, shadow settings kept). Every move is logged and counted
// (vitq_adaptive_switches_total). The controller owns the routing of such a model: manual
// SetRouting changes are overridden at its next move.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/adaptive.h"
#include "server/metrics.h"
#include "server/model_repository.h"
#include "server/variant_stats.h"

namespace vitq::server {

class AdaptiveRunner {
 public:
  // Starts its thread. `metrics` may be null; both must outlive the runner.
  AdaptiveRunner(ModelRepository* repository, ServerMetrics* metrics);
  ~AdaptiveRunner();  // stops and joins

  // One pass over the models whose interval is due at `now_us` (steady clock); the thread calls
  // it every 100 ms. Public for tests.
  void Tick(int64_t now_us);

 private:
  struct ModelState {
    std::unique_ptr<AdaptiveController> controller;
    std::map<std::string, LatencyHistogram::Counts> last_latency;  // per variant, at last tick
    int64_t next_due_us = 0;
  };
  void Run();
  void StepModel(const ServedModel& model, ModelState& state);
  void Route(const ServedModel& model, const std::string& variant);

  ModelRepository* const repository_;
  ServerMetrics* const metrics_;
  std::map<std::string, ModelState> states_;  // touched by Tick only (one thread)
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace vitq::server
