#include "server/clock.h"

#include <algorithm>
#include <chrono>

#include "absl/time/time.h"

namespace vitq::server {

Clock* Clock::Real() {
  static RealClock* const clock = new RealClock();
  return clock;
}

int64_t RealClock::NowMicros() const {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool RealClock::AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond,
                                  int64_t deadline_us) {
  if (deadline_us == kInfiniteFuture) {
    mu.Await(cond);
    return true;
  }
  // absl times the wait on its own clock, which may disagree with steady_clock by a hair; loop so
  // that we never return before our own deadline.
  for (;;) {
    const int64_t remaining_us = deadline_us - NowMicros();
    if (remaining_us <= 0) return cond.Eval();
    if (mu.AwaitWithTimeout(cond, absl::Microseconds(remaining_us))) return true;
  }
}

int64_t FakeClock::NowMicros() const { return now_us_.load(); }

bool FakeClock::AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond,
                                  int64_t deadline_us) {
  Waiter waiter{&mu, deadline_us};
  {
    absl::MutexLock lock(&mu_);
    waiters_.push_back(&waiter);
  }
  // Fake time is not guarded by `mu`, so absl would not re-evaluate this condition when time
  // moves; AdvanceMicros makes it do so by locking and unlocking `mu` after moving time.
  auto ready = [this, &cond, deadline_us] { return cond.Eval() || NowMicros() >= deadline_us; };
  mu.Await(absl::Condition(&ready));

  // Leave the registry without holding `mu`: an AdvanceMicros that pinned `waiter` may be about
  // to lock `mu`, and it unpins only after that.
  mu.Unlock();
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&Unpinned, &waiter));
    waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &waiter));
  }
  mu.Lock();
  return cond.Eval();
}

void FakeClock::AdvanceMicros(int64_t delta_us) {
  absl::MutexLock lock(&mu_);
  SetLocked(now_us_.load() + std::max<int64_t>(delta_us, 0));
}

void FakeClock::SetMicros(int64_t now_us) {
  absl::MutexLock lock(&mu_);
  SetLocked(std::max(now_us, now_us_.load()));
}

void FakeClock::SetLocked(int64_t now_us) {
  now_us_.store(now_us);
  std::vector<Waiter*> due;
  for (Waiter* waiter : waiters_) {
    if (waiter->deadline_us <= now_us) {
      ++waiter->pins;
      due.push_back(waiter);
    }
  }
  // Lock order: a waiter holds its `mu` while it registers (taking mu_), so never hold mu_ while
  // taking a waiter's `mu`. The pins keep each Waiter (and so its `mu`) alive meanwhile.
  mu_.Unlock();
  for (Waiter* waiter : due) {
    // Releasing a mutex makes absl re-evaluate the conditions of the threads waiting on it.
    waiter->mu->Lock();
    waiter->mu->Unlock();
  }
  mu_.Lock();
  for (Waiter* waiter : due) --waiter->pins;
}

bool FakeClock::BlockUntilWaiter(int64_t deadline_us, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto has_waiter = [this, deadline_us]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return std::any_of(waiters_.begin(), waiters_.end(),
                       [deadline_us](const Waiter* w) { return w->deadline_us == deadline_us; });
  };
  return mu_.AwaitWithTimeout(absl::Condition(&has_waiter), timeout);
}

int FakeClock::NumWaiters() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(waiters_.size());
}

bool FakeClock::Unpinned(Waiter* waiter) { return waiter->pins == 0; }

}  // namespace vitq::server
