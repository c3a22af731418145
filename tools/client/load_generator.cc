#include "tools/client/load_generator.h"

#include <chrono>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "tools/client/connection.h"

namespace vitq::client {
namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsBetween(Clock::time_point start, Clock::time_point end) {
  return std::chrono::duration<double, std::milli>(end - start).count();
}

Clock::duration ToClockDuration(absl::Duration d) {
  return std::chrono::duration_cast<Clock::duration>(absl::ToChronoNanoseconds(d));
}

// Counts RPCs whose callback has not finished yet, so that nothing outlives the run.
class InFlightCounter {
 public:
  void Add() {
    absl::MutexLock lock(&mu_);
    ++count_;
  }

  // Adds one unless `limit` are in flight already.
  bool TryAdd(int64_t limit) {
    absl::MutexLock lock(&mu_);
    if (count_ >= limit) return false;
    ++count_;
    return true;
  }

  // Must be the last thing a callback does: the waiter may destroy everything right after.
  void Done() {
    absl::MutexLock lock(&mu_);
    --count_;
  }

  void WaitUntilZero() { absl::MutexLock lock(&mu_, absl::Condition(&IsZero, &count_)); }

 private:
  static bool IsZero(int64_t* count) { return *count == 0; }

  absl::Mutex mu_;
  int64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

// Thread-safe collection of the outcome of measured requests.
class StatsRecorder {
 public:
  void Record(const CallResult& result, double latency_ms) {
    std::string code = CodeName(result.status.error_code());
    absl::MutexLock lock(&mu_);
    if (result.status.ok()) {
      stats_.ok_latency_ms.push_back(latency_ms);
      ++stats_.variants[result.variant.empty() ? "(unnamed)" : result.variant];
    } else {
      stats_.first_error.try_emplace(code, ToAbslStatus(result.status));
    }
    ++stats_.codes[std::move(code)];
  }

  // Call once no RPC is in flight.
  LoadStats Take() {
    absl::MutexLock lock(&mu_);
    return std::move(stats_);
  }

 private:
  absl::Mutex mu_;
  LoadStats stats_ ABSL_GUARDED_BY(mu_);
};

// Hands out send numbers until the request count or the end time is reached.
class SendBudget {
 public:
  SendBudget(std::optional<int64_t> max_sends, std::optional<Clock::time_point> end)
      : max_sends_(max_sends), end_(end) {}

  // The number of the next send, or nullopt when the budget is spent.
  std::optional<int64_t> Claim() {
    absl::MutexLock lock(&mu_);
    if (max_sends_ && claimed_ >= *max_sends_) return std::nullopt;
    if (end_ && Clock::now() >= *end_) return std::nullopt;
    return claimed_++;
  }

  int64_t claimed() {
    absl::MutexLock lock(&mu_);
    return claimed_;
  }

 private:
  const std::optional<int64_t> max_sends_;
  const std::optional<Clock::time_point> end_;
  absl::Mutex mu_;
  int64_t claimed_ ABSL_GUARDED_BY(mu_) = 0;
};

// Keeps `concurrency` RPCs in flight: every completion sends the next until the budget is spent.
class ClosedLoop {
 public:
  // `recorder` may be null (warm-up).
  ClosedLoop(InferenceClient& client, SendBudget& budget, StatsRecorder* recorder)
      : client_(client), budget_(budget), recorder_(recorder) {}

  void Run(int concurrency) {
    for (int i = 0; i < concurrency; ++i) SendNext();
    in_flight_.WaitUntilZero();
  }

 private:
  void SendNext() {
    const std::optional<int64_t> number = budget_.Claim();
    if (!number) return;
    in_flight_.Add();
    const Clock::time_point start = Clock::now();
    client_.Send(*number % client_.num_requests(), [this, start](CallResult result) {
      if (recorder_ != nullptr) recorder_->Record(result, MillisecondsBetween(start, Clock::now()));
      // The successor is counted before this call is released, so the count reaches zero only
      // when the budget is spent.
      SendNext();
      in_flight_.Done();
    });
  }

  InferenceClient& client_;
  SendBudget& budget_;
  StatsRecorder* const recorder_;
  InFlightCounter in_flight_;
};

std::optional<Clock::time_point> EndTime(Clock::time_point start,
                                         std::optional<absl::Duration> duration) {
  if (!duration) return std::nullopt;
  return start + ToClockDuration(*duration);
}

void RunWarmup(InferenceClient& client, const LoadOptions& options) {
  if (options.warmup_requests <= 0) return;
  SendBudget budget(options.warmup_requests, std::nullopt);
  ClosedLoop(client, budget, /*recorder=*/nullptr).Run(options.concurrency);
}

void RunClosedLoop(InferenceClient& client, const LoadOptions& options, StatsRecorder& recorder,
                   LoadStats& counts) {
  SendBudget budget(options.requests, EndTime(Clock::now(), options.duration));
  ClosedLoop(client, budget, &recorder).Run(options.concurrency);
  counts.sent = budget.claimed();
}

// Paces sends on the calling thread; completions run on gRPC threads.
void RunOpenLoop(InferenceClient& client, const LoadOptions& options, StatsRecorder& recorder,
                 LoadStats& counts) {
  const std::chrono::duration<double> interval(1.0 / *options.rate_rps);
  const Clock::duration late_threshold = ToClockDuration(kLateThreshold);
  const Clock::time_point start = Clock::now();
  const std::optional<Clock::time_point> end = EndTime(start, options.duration);
  InFlightCounter in_flight;
  for (int64_t slot = 0; !options.requests || slot < *options.requests; ++slot) {
    // Multiplying (not accumulating) the interval keeps rounding errors from drifting the rate.
    const Clock::time_point scheduled =
        start + std::chrono::duration_cast<Clock::duration>(interval * static_cast<double>(slot));
    if (end && scheduled >= *end) break;
    std::this_thread::sleep_until(scheduled);
    if (Clock::now() - scheduled > late_threshold) ++counts.late;
    if (!in_flight.TryAdd(options.max_outstanding)) {
      ++counts.skipped;
      continue;
    }
    const size_t request_index = static_cast<size_t>(counts.sent++) % client.num_requests();
    client.Send(request_index, [&recorder, &in_flight, scheduled](CallResult result) {
      recorder.Record(result, MillisecondsBetween(scheduled, Clock::now()));
      in_flight.Done();
    });
  }
  in_flight.WaitUntilZero();
}

}  // namespace

LoadStats GenerateLoad(InferenceClient& client, const LoadOptions& options) {
  RunWarmup(client, options);
  StatsRecorder recorder;
  LoadStats counts;
  const Clock::time_point start = Clock::now();
  if (options.rate_rps) {
    RunOpenLoop(client, options, recorder, counts);
  } else {
    RunClosedLoop(client, options, recorder, counts);
  }
  const Clock::time_point end = Clock::now();
  LoadStats stats = recorder.Take();
  stats.sent = counts.sent;
  stats.late = counts.late;
  stats.skipped = counts.skipped;
  stats.duration_s = std::chrono::duration<double>(end - start).count();
  return stats;
}

}  // namespace vitq::client
