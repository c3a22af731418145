#include "server/adaptive_runner.h"

#include <cstdio>

#include "absl/time/clock.h"
#include "server/clock.h"

namespace vitq::server {

AdaptiveRunner::AdaptiveRunner(ModelRepository* repository, ServerMetrics* metrics)
    : repository_(repository), metrics_(metrics), thread_([this] { Run(); }) {}

AdaptiveRunner::~AdaptiveRunner() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void AdaptiveRunner::Run() {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(100))) {
    mu_.Unlock();
    Tick(Clock::Real()->NowMicros());
    mu_.Lock();
  }
}

void AdaptiveRunner::Tick(int64_t now_us) {
  std::map<std::string, ModelState> kept;
  for (const auto& model : repository_->models()) {
    if (!model->entry().adaptive) continue;
    const AdaptivePolicy& policy = *model->entry().adaptive;
    ModelState state = std::move(states_[model->name()]);
    if (!state.controller || !(state.controller->policy() == policy)) {
      // A new (or reloaded) policy starts on its most accurate variant.
      state = ModelState{std::make_unique<AdaptiveController>(policy), {}, 0};
      Route(*model, policy.variants.front());
    }
    if (now_us >= state.next_due_us) {
      if (state.next_due_us != 0)
        StepModel(*model, state);
      else  // first tick: only take the baseline snapshots
        for (const auto& e : model->routing()->entries())
          state.last_latency[e.variant->name()] = e.variant->stats().latency().Snapshot();
      state.next_due_us = now_us + static_cast<int64_t>(policy.interval_s * 1e6);
    }
    kept[model->name()] = std::move(state);
  }
  states_ = std::move(kept);  // models without a policy (any more) are forgotten
}

void AdaptiveRunner::StepModel(const ServedModel& model, ModelState& state) {
  const AdaptivePolicy& policy = state.controller->policy();
  const std::shared_ptr<const RoutingTable> table = model.routing();
  // The interval's latencies of all the model's traffic, whichever variant served it.
  LatencyHistogram::Counts interval(LatencyHistogram::kBuckets, 0);
  for (const auto& e : table->entries()) {
    LatencyHistogram::Counts now = e.variant->stats().latency().Snapshot();
    const LatencyHistogram::Counts delta =
        LatencyHistogram::Difference(now, state.last_latency[e.variant->name()]);
    for (size_t i = 0; i < delta.size(); ++i) interval[i] += std::max<int64_t>(delta[i], 0);
    state.last_latency[e.variant->name()] = std::move(now);
  }
  AdaptiveObservation observation;
  for (int64_t c : interval) observation.requests += c;
  observation.p99_ms = LatencyHistogram::Quantile(interval, 0.99) / 1000.0;
  for (const std::string& name : policy.variants) {
    std::shared_ptr<Variant> v = table->Find(name);
    observation.agreement.push_back(v ? v->stats().shadow_agreement() : 0.0);
    observation.comparisons.push_back(v ? v->stats().shadow_compared() : 0);
  }
  const std::string from = policy.variants[state.controller->rung()];
  const AdaptiveDecision decision = state.controller->Step(observation);
  if (!decision.changed) return;
  const std::string& to = policy.variants[decision.rung];
  std::fprintf(stderr, "vitq-server: adaptive: model '%s': %s\n", model.name().c_str(),
               decision.reason.c_str());
  if (metrics_) metrics_->OnAdaptiveSwitch(model.name(), from, to);
  Route(model, to);
}

void AdaptiveRunner::Route(const ServedModel& model, const std::string& variant) {
  const std::shared_ptr<const RoutingTable> table = model.routing();
  if (table->Share(variant) == 1.0) return;
  RoutingChange change;
  change.weights[variant] = 1;
  change.shadow = table->shadow();
  absl::StatusOr<std::shared_ptr<const RoutingTable>> routed =
      repository_->SetRouting(model.name(), change);
  if (!routed.ok()) {
    std::fprintf(stderr, "vitq-server: adaptive: model '%s': cannot route to %s: %s\n",
                 model.name().c_str(), variant.c_str(),
                 std::string(routed.status().message()).c_str());
  }
}

}  // namespace vitq::server
