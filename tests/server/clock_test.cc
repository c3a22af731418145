// Tests of FakeClock, the clock the batcher tests run on. Real time appears only as generous
// timeouts on waits for other threads, so that a bug fails a test instead of hanging it.
#include "server/clock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace vitq::server {
namespace {

const absl::Duration kRealTimeout = absl::Seconds(20);

TEST(FakeClockTest, AdvancingToTheDeadlineWakesTheWaiterAndNotBefore) {
  FakeClock clock(100);
  absl::Mutex mu;
  bool never = false;
  std::atomic<bool> returned{false};
  bool result = true;
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    result = clock.AwaitWithDeadline(mu, absl::Condition(&never), 300);
    returned = true;
  });
  ASSERT_TRUE(clock.BlockUntilWaiter(300, kRealTimeout));
  clock.AdvanceMicros(199);
  EXPECT_TRUE(clock.BlockUntilWaiter(300, kRealTimeout));
  EXPECT_FALSE(returned);
  clock.AdvanceMicros(1);
  waiter.join();
  EXPECT_TRUE(returned);
  EXPECT_FALSE(result);
  EXPECT_EQ(clock.NowMicros(), 300);
  EXPECT_EQ(clock.NumWaiters(), 0);
}

TEST(FakeClockTest, TheConditionWakesTheWaiterWithoutTimeMoving) {
  FakeClock clock;
  absl::Mutex mu;
  bool ready = false;
  bool result = false;
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    result = clock.AwaitWithDeadline(mu, absl::Condition(&ready), Clock::kInfiniteFuture);
  });
  ASSERT_TRUE(clock.BlockUntilWaiter(Clock::kInfiniteFuture, kRealTimeout));
  {
    absl::MutexLock lock(&mu);
    ready = true;
  }
  waiter.join();
  EXPECT_TRUE(result);
  EXPECT_EQ(clock.NowMicros(), 0);
}

}  // namespace
}  // namespace vitq::server
