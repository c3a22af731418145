#include "server/adaptive.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vitq::server {
namespace {

// A variant that failed the SLO gets traffic back only below this share of the load it failed at.
constexpr double kClimbBackLoad = 0.8;

}  // namespace

absl::Status ValidateAdaptivePolicy(const AdaptivePolicy& p) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError("adaptive: " + what);
  };
  if (p.variants.size() < 2)
    return bad("variants needs at least two variants, most accurate first");
  if (std::set<std::string>(p.variants.begin(), p.variants.end()).size() != p.variants.size())
    return bad("variants lists a variant twice");
  if (!(p.p99_slo_ms > 0)) return bad("p99_slo_ms must be > 0");
  if (!(p.agreement_floor >= 0 && p.agreement_floor <= 1))
    return bad("agreement_floor must be in [0, 1]");
  if (p.min_comparisons < 1) return bad("min_comparisons must be >= 1");
  if (!(p.interval_s >= 0.1 && p.interval_s <= 3600))
    return bad("interval_s must be in [0.1, 3600]");
  if (!(p.step_up_below > 0 && p.step_up_below < p.step_down_at && p.step_down_at <= 1))
    return bad("need 0 < step_up_below < step_down_at <= 1");
  if (p.calm_intervals < 1) return bad("calm_intervals must be >= 1");
  return absl::OkStatus();
}

bool AdaptiveController::Allowed(int r, const AdaptiveObservation& o) const {
  if (r == 0) return true;
  if (r >= static_cast<int>(o.agreement.size()) || r >= static_cast<int>(o.comparisons.size()))
    return false;
  return o.comparisons[r] >= policy_.min_comparisons && o.agreement[r] >= policy_.agreement_floor;
}

AdaptiveDecision AdaptiveController::MoveTo(int rung, std::string reason) {
  AdaptiveDecision d{rung, rung != rung_, std::move(reason)};
  if (d.changed) {
    d.reason =
        absl::StrCat(d.reason, ": ", policy_.variants[rung_], " -> ", policy_.variants[rung]);
  }
  moved_last_ = d.changed;
  rung_ = rung;
  calm_ = 0;
  return d;
}

AdaptiveDecision AdaptiveController::Step(const AdaptiveObservation& o) {
  const int last = static_cast<int>(policy_.variants.size()) - 1;
  // The floor first: a variant whose agreement fell below it loses its traffic at once.
  if (!Allowed(rung_, o)) {
    int up = rung_;
    while (up > 0 && !Allowed(up, o)) --up;
    return MoveTo(up, absl::StrFormat("%s is below the agreement floor %.4f",
                                      policy_.variants[rung_], policy_.agreement_floor));
  }
  // The load a rung could not carry: at least what the rung below it carries while we stay down
  // (the interval that failed may have been a partial one, or one whose completions were capped
  // by the overload itself).
  if (rung_ > 0) {
    failed_at_requests_[rung_ - 1] = std::max(failed_at_requests_[rung_ - 1], o.requests);
  }
  if (moved_last_) {  // let one interval show the effect of the last move
    moved_last_ = false;
    return {rung_, false, "holding after a move"};
  }
  const double down_ms = policy_.step_down_at * policy_.p99_slo_ms;
  const double up_ms = policy_.step_up_below * policy_.p99_slo_ms;
  if (o.requests > 0 && o.p99_ms > down_ms) {
    failed_at_requests_[rung_] = o.requests;
    for (int r = rung_ + 1; r <= last; ++r) {
      if (Allowed(r, o)) {
        return MoveTo(r, absl::StrFormat("p99 %.1f ms > %.1f ms (%.2f x SLO)", o.p99_ms, down_ms,
                                         policy_.step_down_at));
      }
    }
    calm_ = 0;
    return {rung_, false, "over the SLO threshold, but no faster variant meets the floor"};
  }
  if (o.requests == 0 || o.p99_ms < up_ms) {
    if (rung_ > 0 && ++calm_ >= policy_.calm_intervals) {
      int up = rung_ - 1;
      while (up > 0 && !Allowed(up, o)) --up;
      const int64_t failed_at = failed_at_requests_[up];
      if (failed_at > 0 && o.requests >= kClimbBackLoad * failed_at) {
        calm_ = 0;
        return {rung_, false,
                absl::StrFormat("calm, but the load is still %.0f%% of what %s failed at",
                                100.0 * o.requests / failed_at, policy_.variants[up])};
      }
      failed_at_requests_[up] = 0;  // it gets its chance again
      return MoveTo(up, absl::StrFormat("p99 %.1f ms < %.1f ms for %d intervals", o.p99_ms, up_ms,
                                        policy_.calm_intervals));
    }
    return {rung_, false, "calm"};
  }
  calm_ = 0;
  return {rung_, false, "within the SLO band"};
}

}  // namespace vitq::server
