// Load-adaptive precision: a per-model controller that moves traffic down a ladder of variants
// (most accurate first, e.g. fp32 → w8a8 → w4a4) when latency threatens the SLO, and back up
// when load drops — never onto a variant whose measured agreement with the model's shadow
// reference is below the floor.
//
// The controller is a pure state machine stepped once per interval with what was observed in
// that interval; the server's runner (server.cc) feeds it the variants' live figures and applies
// its decisions as routing changes. Hysteresis: it steps down when the interval's p99 passes
// step_down_at·SLO, steps up only after `calm_intervals` intervals in a row below
// step_up_below·SLO and only while the load is below 80% of the highest load seen since that
// variant last failed the SLO (so it does not climb back into an overload it just left), and
// never moves twice in consecutive intervals.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace vitq::server {

struct AdaptivePolicy {
  std::vector<std::string>
      variants;                   // the ladder, most accurate first (the first is always allowed)
  double p99_slo_ms = 0;          // target p99 latency of the model's requests
  double agreement_floor = 0.99;  // top-1 agreement with the reference a variant needs
  int64_t min_comparisons = 200;  // shadow comparisons before a variant's agreement counts
  double interval_s = 5;          // how often the controller decides
  double step_down_at = 0.8;      // p99 above this fraction of the SLO: one step faster
  double step_up_below = 0.4;     // p99 below this fraction ...
  int calm_intervals = 3;         // ... this many intervals in a row: one step more accurate

  bool operator==(const AdaptivePolicy&) const = default;
};

// INVALID_ARGUMENT naming the setting that is out of range.
absl::Status ValidateAdaptivePolicy(const AdaptivePolicy& policy);

// What was measured over one interval.
struct AdaptiveObservation {
  double p99_ms = 0;     // of the model's requests answered in the interval
  int64_t requests = 0;  // answered in the interval
  // Per ladder rung: agreement with the reference so far, and how many comparisons it rests on.
  std::vector<double> agreement;
  std::vector<int64_t> comparisons;
};

struct AdaptiveDecision {
  int rung = 0;          // index into policy.variants to route to
  bool changed = false;  // differs from the previous rung
  std::string reason;    // for the log ("p99 61.2 ms > 40.0 ms (0.8 x SLO): w8a8 -> w4a4")
};

class AdaptiveController {
 public:
  explicit AdaptiveController(AdaptivePolicy policy)
      : policy_(std::move(policy)), failed_at_requests_(policy_.variants.size(), 0) {}

  AdaptiveDecision Step(const AdaptiveObservation& observation);
  int rung() const { return rung_; }
  const AdaptivePolicy& policy() const { return policy_; }

 private:
  // Whether rung `r` may carry traffic: the first always; others once their agreement is known
  // and at or above the floor.
  bool Allowed(int r, const AdaptiveObservation& observation) const;
  AdaptiveDecision MoveTo(int rung, std::string reason);

  AdaptivePolicy policy_;
  std::vector<int64_t> failed_at_requests_;  // per rung: interval load it last failed at (0: none)
  int rung_ = 0;
  int calm_ = 0;             // consecutive calm intervals
  bool moved_last_ = false;  // moved in the previous interval: hold this one
};

}  // namespace vitq::server
