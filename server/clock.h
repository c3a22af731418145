// Time for the serving path, behind an interface so that time-dependent logic (the batcher's
// queue delay, request deadlines) can be tested on a fake clock that never sleeps.
//
// A Clock gives the time in microseconds and a wait primitive that works like
// absl::Mutex::AwaitWithDeadline on that clock: block, with a mutex held, until a condition
// holds or the clock reaches a deadline. Code that waits on time must use this primitive (never
// absl::SleepFor or a raw condition variable timeout) so that FakeClock can wake it.
//
//   RealClock  steady (monotonic) time; waits really block.
//   FakeClock  time moves only when a test calls AdvanceMicros()/SetMicros(); advancing wakes
//              every waiter whose deadline has been reached. Tests can also block until a
//              thread waits with a given deadline (BlockUntilWaiter) to know that, say, the
//              batcher has looked at its queue and decided to wait — no real sleeping needed.
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace vitq::server {

class Clock {
 public:
  // A deadline that is never reached: AwaitWithDeadline waits for the condition only.
  static constexpr int64_t kInfiniteFuture = std::numeric_limits<int64_t>::max();

  virtual ~Clock() = default;

  // Microseconds since an arbitrary, fixed origin. Never goes backwards.
  virtual int64_t NowMicros() const = 0;

  // With `mu` held, blocks until `cond` holds or NowMicros() >= `deadline_us`, then returns
  // with `mu` held again. Returns the value of `cond` on return. Like a condition variable, the
  // mutex may be released and reacquired while waiting, and `cond` is evaluated with `mu` held.
  virtual bool AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond, int64_t deadline_us)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) = 0;

  // A process-wide RealClock (never destroyed).
  static Clock* Real();
};

class RealClock final : public Clock {
 public:
  int64_t NowMicros() const override;
  bool AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond, int64_t deadline_us)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) override;
};

// Thread-safe. Starts at `start_us` and moves only when told to.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_us = 0) : now_us_(start_us) {}
  FakeClock(const FakeClock&) = delete;
  FakeClock& operator=(const FakeClock&) = delete;

  int64_t NowMicros() const override;
  bool AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond, int64_t deadline_us)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) override;

  // Moves time forward by `delta_us` (>= 0) / to `now_us` (never backwards), then wakes every
  // waiter whose deadline has been reached. On return, each such waiter has been made runnable
  // (it may not have run yet).
  void AdvanceMicros(int64_t delta_us);
  void SetMicros(int64_t now_us);

  // Blocks (in real time, at most `timeout`) until some thread is inside AwaitWithDeadline with
  // exactly `deadline_us` (Clock::kInfiniteFuture: a thread that waits for its condition only).
  // Returns whether that happened. Tests use it to know that a thread has gone to sleep.
  bool BlockUntilWaiter(int64_t deadline_us, absl::Duration timeout = absl::InfiniteDuration());

  // Number of threads inside AwaitWithDeadline right now.
  int NumWaiters() const;

 private:
  // One thread inside AwaitWithDeadline. Lives on that thread's stack.
  struct Waiter {
    absl::Mutex* mu;      // the mutex the waiter waits on; outlives the wait
    int64_t deadline_us;  // the deadline it waits for
    int pins = 0;         // AdvanceMicros calls that still use this Waiter
  };

  // Sets the time and wakes the waiters it makes due. Releases mu_ while waking them.
  void SetLocked(int64_t now_us) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static bool Unpinned(Waiter* waiter);

  mutable absl::Mutex mu_;
  // Written under mu_, read without it by the waiters' conditions (which run under their own
  // mutex), hence atomic.
  std::atomic<int64_t> now_us_;
  std::vector<Waiter*> waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vitq::server
