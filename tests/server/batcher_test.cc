// Tests of the dynamic batcher. Time-dependent logic runs on a FakeClock: nothing sleeps. Real
// time appears only as generous timeouts on waits for the worker thread, so that a bug fails a
// test instead of hanging it.
#include "server/batcher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/clock.h"

namespace vitq::server {
namespace {

constexpr int64_t kStartUs = 1'000'000;
const absl::Duration kRealTimeout = absl::Seconds(20);
constexpr int kBlockerId = -1;

using TestBatcher = Batcher<int>;  // payload: the task's id
using TestTask = TestBatcher::TaskType;

// Every done() call, by task id.
class Completions {
 public:
  std::function<void(absl::Status)> For(int id) {
    return [this, id](absl::Status status) {
      absl::MutexLock lock(&mu_);
      by_id_[id].push_back(std::move(status));
      ++count_;
    };
  }

  bool WaitForCount(int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), kRealTimeout);
  }

  int count() const {
    absl::MutexLock lock(&mu_);
    return count_;
  }

  std::vector<absl::Status> Of(int id) const {
    absl::MutexLock lock(&mu_);
    auto it = by_id_.find(id);
    return it == by_id_.end() ? std::vector<absl::Status>{} : it->second;
  }

  // The one status `id` was completed with; fails the test unless there was exactly one.
  absl::StatusCode CodeOf(int id) const {
    std::vector<absl::Status> statuses = Of(id);
    EXPECT_EQ(statuses.size(), 1u) << "task " << id;
    return statuses.empty() ? absl::StatusCode::kUnknown : statuses[0].code();
  }

 private:
  mutable absl::Mutex mu_;
  std::map<int, std::vector<absl::Status>> by_id_ ABSL_GUARDED_BY(mu_);
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

// The ProcessBatch of the tests: records each batch and completes its tasks with OK. A batch of
// the single blocker task keeps the worker inside ProcessBatch until Release().
class Engine {
 public:
  void Process(std::vector<std::unique_ptr<TestTask>>& batch) {
    if (batch.size() == 1 && batch[0]->payload == kBlockerId) {
      entered_.Notify();
      release_.WaitForNotificationWithTimeout(kRealTimeout);
    } else {
      std::vector<int> ids;
      int images = 0;
      for (const auto& task : batch) {
        ids.push_back(task->payload);
        images += task->num_images;
      }
      absl::MutexLock lock(&mu_);
      batches_.push_back(std::move(ids));
      batch_images_.push_back(images);
    }
    for (auto& task : batch) task->Complete(absl::OkStatus());
  }

  bool WaitUntilHeld() { return entered_.WaitForNotificationWithTimeout(kRealTimeout); }
  void Release() { release_.Notify(); }

  std::vector<std::vector<int>> batches() const {
    absl::MutexLock lock(&mu_);
    return batches_;
  }
  std::vector<int> batch_images() const {
    absl::MutexLock lock(&mu_);
    return batch_images_;
  }

 private:
  absl::Notification entered_;
  absl::Notification release_;
  mutable absl::Mutex mu_;
  std::vector<std::vector<int>> batches_ ABSL_GUARDED_BY(mu_);  // task ids, blocker excluded
  std::vector<int> batch_images_ ABSL_GUARDED_BY(mu_);
};

class RecordingObserver : public BatchObserver {
 public:
  struct Dequeued {
    absl::StatusCode outcome;
    int64_t queue_time_us;
  };
  void OnBatch(int num_tasks, int num_images) override {
    absl::MutexLock lock(&mu_);
    batches_.push_back({num_tasks, num_images});
  }
  void OnTaskDequeued(absl::StatusCode outcome, int64_t queue_time_us) override {
    absl::MutexLock lock(&mu_);
    dequeued_.push_back({outcome, queue_time_us});
  }
  std::vector<std::pair<int, int>> batches() const {
    absl::MutexLock lock(&mu_);
    return batches_;
  }
  std::vector<Dequeued> dequeued() const {
    absl::MutexLock lock(&mu_);
    return dequeued_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::pair<int, int>> batches_ ABSL_GUARDED_BY(mu_);  // (tasks, images)
  std::vector<Dequeued> dequeued_ ABSL_GUARDED_BY(mu_);
};

class BatcherTest : public ::testing::Test {
 protected:
  BatcherOptions Options() {
    BatcherOptions options;
    options.name = "v";
    options.clock = &clock_;
    options.observer = &observer_;
    return options;
  }

  void Start(const BatcherOptions& options) {
    auto batcher = TestBatcher::Create(
        options, [this](std::vector<std::unique_ptr<TestTask>>& batch) { engine_.Process(batch); });
    ASSERT_TRUE(batcher.ok()) << batcher.status();
    batcher_ = std::move(*batcher);
  }

  std::unique_ptr<TestTask> MakeTask(int id, int images = 1, int priority = 0) {
    auto task = std::make_unique<TestTask>();
    task->payload = id;
    task->num_images = images;
    task->priority = priority;
    task->done = completions_.For(id);
    return task;
  }

  absl::Status Submit(int id, int images = 1, int priority = 0) {
    return batcher_->Schedule(MakeTask(id, images, priority));
  }

  // Dispatches a full-size blocker batch and keeps the worker inside its ProcessBatch until
  // ReleaseWorker(): whatever is scheduled meanwhile is all queued when the worker looks next.
  void HoldWorker() {
    auto blocker = std::make_unique<TestTask>();
    blocker->payload = kBlockerId;
    blocker->num_images = batcher_->options().max_batch_size;
    blocker->done = [](absl::Status) {};
    ASSERT_TRUE(batcher_->Schedule(std::move(blocker)).ok());
    ASSERT_TRUE(engine_.WaitUntilHeld());
  }
  void ReleaseWorker() { engine_.Release(); }

  // Blocks until the worker sleeps waiting for the fake clock to reach `deadline_us`.
  void ExpectWorkerSleepsUntil(int64_t deadline_us) {
    EXPECT_TRUE(clock_.BlockUntilWaiter(deadline_us, kRealTimeout)) << deadline_us;
  }

  FakeClock clock_{kStartUs};
  Completions completions_;
  Engine engine_;
  RecordingObserver observer_;
  std::unique_ptr<TestBatcher> batcher_;  // declared last: stopped and joined first
};

// ---- The rule, as a pure function ----

internal::BatchingRule Rule(int max_batch_size, std::vector<int> preferred, int64_t delay_us) {
  return {max_batch_size, std::move(preferred), delay_us};
}

TEST(PlanBatchTest, DefaultsWaitForAFullBatchOrTheDelay) {
  const auto rule = Rule(8, {8}, 2000);
  EXPECT_EQ(internal::PlanBatch(rule, {1, 1, 1}, 0, false).num_tasks, 0);
  EXPECT_EQ(internal::PlanBatch(rule, {1, 1, 1}, 0, false).wait_us, 2000);
  EXPECT_EQ(internal::PlanBatch(rule, {1, 1, 1}, 1999, false).wait_us, 1);
  EXPECT_EQ(internal::PlanBatch(rule, {1, 1, 1}, 1999, false).num_tasks, 0);
  EXPECT_EQ(internal::PlanBatch(rule, {1, 1, 1}, 2000, false).num_tasks, 3);
  EXPECT_EQ(internal::PlanBatch(rule, std::vector<int>(9, 1), 0, false).num_tasks, 8);
  // The next task would overflow: what fits goes now.
  EXPECT_EQ(internal::PlanBatch(rule, {3, 3, 3}, 0, false).num_tasks, 2);
  EXPECT_EQ(internal::PlanBatch(rule, {3, 5, 2}, 0, false).num_tasks, 2);
}

TEST(PlanBatchTest, LargestPreferredSizeGoesAtOnceUntilTheDelayExpires) {
  const auto rule = Rule(8, {2, 4}, 2000);
  EXPECT_EQ(internal::PlanBatch(rule, {1}, 0, false).num_tasks, 0);
  EXPECT_EQ(internal::PlanBatch(rule, {1, 1}, 0, false).num_tasks, 2);
  EXPECT_EQ(internal::PlanBatch(rule, {1, 1, 1}, 0, false).num_tasks, 2);
  EXPECT_EQ(internal::PlanBatch(rule, {1, 1, 1, 1, 1}, 0, false).num_tasks, 4);
  // Past the delay, the batch is as large as max_batch_size allows.
  EXPECT_EQ(internal::PlanBatch(rule, {1, 1, 1, 1, 1}, 2000, false).num_tasks, 5);
  // More than the largest preferred size is queued but no prefix hits one: what fits within it.
  EXPECT_EQ(internal::PlanBatch(Rule(8, {4}, 2000), {3, 3}, 0, false).num_tasks, 1);
  // A single task larger than every preferred size goes alone.
  EXPECT_EQ(internal::PlanBatch(Rule(8, {4}, 2000), {6}, 0, false).num_tasks, 1);
}

TEST(PlanBatchTest, ZeroDelayAndFlushDispatchWhatIsQueued) {
  EXPECT_EQ(internal::PlanBatch(Rule(8, {8}, 0), {1, 2}, 0, false).num_tasks, 2);
  EXPECT_EQ(internal::PlanBatch(Rule(8, {4}, 0), {1, 1, 1, 1, 1}, 0, false).num_tasks, 4);
  EXPECT_EQ(internal::PlanBatch(Rule(8, {8}, 2000), {1, 2}, 0, true).num_tasks, 2);
  EXPECT_EQ(internal::PlanBatch(Rule(8, {4}, 2000), {1, 1, 1, 1, 1}, 0, true).num_tasks, 5);
}

// ---- The batcher ----

TEST_F(BatcherTest, CreateRejectsBadOptions) {
  auto process = [](std::vector<std::unique_ptr<TestTask>>&) {};
  auto expect_invalid = [&](BatcherOptions options) {
    EXPECT_EQ(TestBatcher::Create(options, process).status().code(),
              absl::StatusCode::kInvalidArgument);
  };
  BatcherOptions options = Options();
  options.max_batch_size = 0;
  expect_invalid(options);
  options = Options();
  options.preferred_batch_sizes = {4, 9};
  expect_invalid(options);
  options = Options();
  options.priority_levels = 0;
  expect_invalid(options);
  options = Options();
  options.max_queue_delay_us = -1;
  expect_invalid(options);
  EXPECT_EQ(TestBatcher::Create(Options(), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(BatcherTest, LoneTaskGoesExactlyWhenMaxQueueDelayHasPassed) {
  BatcherOptions options = Options();
  options.max_queue_delay_us = 2000;
  Start(options);
  ASSERT_TRUE(Submit(1).ok());

  ExpectWorkerSleepsUntil(kStartUs + 2000);
  clock_.AdvanceMicros(1999);
  ExpectWorkerSleepsUntil(kStartUs + 2000);  // still asleep, nothing dispatched
  EXPECT_EQ(completions_.count(), 0);
  EXPECT_TRUE(engine_.batches().empty());

  clock_.AdvanceMicros(1);
  ASSERT_TRUE(completions_.WaitForCount(1));
  EXPECT_EQ(completions_.CodeOf(1), absl::StatusCode::kOk);
  EXPECT_EQ(engine_.batches(), std::vector<std::vector<int>>({{1}}));
  ASSERT_EQ(observer_.dequeued().size(), 1u);
  EXPECT_EQ(observer_.dequeued()[0].outcome, absl::StatusCode::kOk);
  EXPECT_EQ(observer_.dequeued()[0].queue_time_us, 2000);
  EXPECT_EQ(observer_.batches(), (std::vector<std::pair<int, int>>{{1, 1}}));
}

TEST_F(BatcherTest, FullBatchGoesWithoutWaiting) {
  BatcherOptions options = Options();
  options.max_batch_size = 4;
  Start(options);
  for (int id = 1; id <= 4; ++id) ASSERT_TRUE(Submit(id).ok());
  ASSERT_TRUE(completions_.WaitForCount(4));  // the fake clock never moved
  EXPECT_EQ(engine_.batches(), std::vector<std::vector<int>>({{1, 2, 3, 4}}));
}

TEST_F(BatcherTest, MultiImageTasksNeverExceedMaxBatchSize) {
  BatcherOptions options = Options();
  options.max_batch_size = 8;
  Start(options);
  HoldWorker();
  const int images[] = {3, 3, 3, 5, 2};
  for (int id = 1; id <= 5; ++id) ASSERT_TRUE(Submit(id, images[id - 1]).ok());
  EXPECT_EQ(Submit(6, 9).code(), absl::StatusCode::kInvalidArgument);
  ReleaseWorker();

  // {3, 3} (the next 3 would overflow), then {3, 5} (exactly full); {2} waits for the delay.
  ASSERT_TRUE(completions_.WaitForCount(4));
  ExpectWorkerSleepsUntil(kStartUs + options.max_queue_delay_us);
  clock_.AdvanceMicros(options.max_queue_delay_us);
  ASSERT_TRUE(completions_.WaitForCount(5));
  EXPECT_EQ(engine_.batches(), std::vector<std::vector<int>>({{1, 2}, {3, 4}, {5}}));
  EXPECT_EQ(engine_.batch_images(), std::vector<int>({6, 8, 2}));
  EXPECT_TRUE(completions_.Of(6).empty());
}

TEST_F(BatcherTest, PreferredBatchSizeGoesWithoutWaitingForTheDelay) {
  BatcherOptions options = Options();
  options.max_batch_size = 8;
  options.preferred_batch_sizes = {4};
  Start(options);
  for (int id = 1; id <= 3; ++id) ASSERT_TRUE(Submit(id).ok());
  ExpectWorkerSleepsUntil(kStartUs + options.max_queue_delay_us);
  EXPECT_EQ(completions_.count(), 0);

  ASSERT_TRUE(Submit(4).ok());
  ASSERT_TRUE(completions_.WaitForCount(4));  // the fake clock never moved
  EXPECT_EQ(engine_.batches(), std::vector<std::vector<int>>({{1, 2, 3, 4}}));
}

TEST_F(BatcherTest, LargestPreferredSizeTheQueueCanFormIsChosen) {
  BatcherOptions options = Options();
  options.max_batch_size = 8;
  options.preferred_batch_sizes = {2, 4};
  Start(options);
  HoldWorker();
  for (int id = 1; id <= 5; ++id) ASSERT_TRUE(Submit(id).ok());
  ReleaseWorker();
  ASSERT_TRUE(completions_.WaitForCount(4));
  ExpectWorkerSleepsUntil(kStartUs + options.max_queue_delay_us);
  clock_.AdvanceMicros(options.max_queue_delay_us);
  ASSERT_TRUE(completions_.WaitForCount(5));
  EXPECT_EQ(engine_.batches(), std::vector<std::vector<int>>({{1, 2, 3, 4}, {5}}));
}

TEST_F(BatcherTest, FullQueueIsResourceExhaustedAndLosesNothing) {
  BatcherOptions options = Options();
  options.max_queue_size = 3;
  Start(options);
  HoldWorker();
  for (int id = 1; id <= 3; ++id) ASSERT_TRUE(Submit(id).ok());
  const absl::Status full = Submit(4);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(full.message(), "queue of variant v is full (3 requests)");
  EXPECT_EQ(batcher_->QueueDepth(), 3);
  ReleaseWorker();
  batcher_->Stop();

  EXPECT_EQ(completions_.count(), 3);
  for (int id = 1; id <= 3; ++id) EXPECT_EQ(completions_.CodeOf(id), absl::StatusCode::kOk);
  EXPECT_TRUE(completions_.Of(4).empty());  // its answer was the RESOURCE_EXHAUSTED
  EXPECT_EQ(engine_.batches(), std::vector<std::vector<int>>({{1, 2, 3}}));
}

TEST_F(BatcherTest, ExpiredTaskIsCompletedWithDeadlineExceededAndNeverRun) {
  BatcherOptions options = Options();
  options.max_queue_delay_us = 2000;
  Start(options);
  auto expiring = MakeTask(1);
  expiring->deadline_us = kStartUs + 500;
  ASSERT_TRUE(batcher_->Schedule(std::move(expiring)).ok());
  ASSERT_TRUE(Submit(2).ok());

  // The worker wakes for the deadline, before the delay.
  ExpectWorkerSleepsUntil(kStartUs + 500);
  clock_.AdvanceMicros(500);
  ASSERT_TRUE(completions_.WaitForCount(1));
  EXPECT_EQ(completions_.CodeOf(1), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(engine_.batches().empty());

  ExpectWorkerSleepsUntil(kStartUs + 2000);
  clock_.AdvanceMicros(1500);
  ASSERT_TRUE(completions_.WaitForCount(2));
  EXPECT_EQ(completions_.CodeOf(2), absl::StatusCode::kOk);
  EXPECT_EQ(engine_.batches(), std::vector<std::vector<int>>({{2}}));
  const auto dequeued = observer_.dequeued();
  ASSERT_EQ(dequeued.size(), 2u);
  EXPECT_EQ(dequeued[0].outcome, absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(dequeued[0].queue_time_us, 500);
}

TEST_F(BatcherTest, TaskThatExpiresWhileTheWorkerIsBusyIsDroppedBeforeDispatch) {
  Start(Options());
  HoldWorker();
  auto expiring = MakeTask(1);
  expiring->deadline_us = kStartUs + 100;
  ASSERT_TRUE(batcher_->Schedule(std::move(expiring)).ok());
  ASSERT_TRUE(Submit(2).ok());
  clock_.AdvanceMicros(100);
  ReleaseWorker();
  batcher_->Stop();
  EXPECT_EQ(completions_.CodeOf(1), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(completions_.CodeOf(2), absl::StatusCode::kOk);
  EXPECT_EQ(engine_.batches(), std::vector<std::vector<int>>({{2}}));
}

TEST_F(BatcherTest, DefaultTimeoutAppliesToTasksWithoutADeadline) {
  BatcherOptions options = Options();
  options.default_timeout_us = 300;
  Start(options);
  ASSERT_TRUE(Submit(1).ok());
  ExpectWorkerSleepsUntil(kStartUs + 300);
  clock_.AdvanceMicros(300);
  ASSERT_TRUE(completions_.WaitForCount(1));
  EXPECT_EQ(completions_.CodeOf(1), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(engine_.batches().empty());
}

TEST_F(BatcherTest, TaskPastItsDeadlineIsRejectedBySchedule) {
  Start(Options());
  auto late = MakeTask(1);
  late->deadline_us = kStartUs;
  EXPECT_EQ(batcher_->Schedule(std::move(late)).code(), absl::StatusCode::kDeadlineExceeded);
  batcher_->Stop();
  EXPECT_TRUE(completions_.Of(1).empty());
}

TEST_F(BatcherTest, CancelledTaskIsCompletedWithCancelledAndNeverRun) {
  Start(Options());
  HoldWorker();
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  auto task = MakeTask(1);
  task->is_cancelled = [cancelled] { return cancelled->load(); };
  ASSERT_TRUE(batcher_->Schedule(std::move(task)).ok());
  ASSERT_TRUE(Submit(2).ok());
  *cancelled = true;
  ReleaseWorker();
  batcher_->Stop();
  EXPECT_EQ(completions_.CodeOf(1), absl::StatusCode::kCancelled);
  EXPECT_EQ(completions_.CodeOf(2), absl::StatusCode::kOk);
  EXPECT_EQ(engine_.batches(), std::vector<std::vector<int>>({{2}}));
}

TEST_F(BatcherTest, HigherPriorityTasksAreBatchedFirst) {
  BatcherOptions options = Options();
  options.max_batch_size = 4;
  options.priority_levels = 2;
  Start(options);
  HoldWorker();
  for (int id = 11; id <= 13; ++id) ASSERT_TRUE(Submit(id, 1, /*priority=*/1).ok());
  for (int id = 1; id <= 2; ++id) ASSERT_TRUE(Submit(id, 1, /*priority=*/0).ok());
  EXPECT_EQ(Submit(99, 1, /*priority=*/2).code(), absl::StatusCode::kInvalidArgument);
  ReleaseWorker();
  ASSERT_TRUE(completions_.WaitForCount(4));
  ExpectWorkerSleepsUntil(kStartUs + options.max_queue_delay_us);
  clock_.AdvanceMicros(options.max_queue_delay_us);
  ASSERT_TRUE(completions_.WaitForCount(5));
  EXPECT_EQ(engine_.batches(), std::vector<std::vector<int>>({{1, 2, 11, 12}, {13}}));
}

TEST_F(BatcherTest, InvalidTasksAreRejectedWithInvalidArgument) {
  Start(Options());  // max_batch_size 8
  EXPECT_EQ(Submit(1, 9).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Submit(2, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Submit(3, 1, /*priority=*/1).code(), absl::StatusCode::kInvalidArgument);
  auto no_done = MakeTask(4);
  no_done->done = nullptr;
  EXPECT_EQ(batcher_->Schedule(std::move(no_done)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(batcher_->Schedule(nullptr).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status too_big = Submit(5, 9);
  EXPECT_EQ(too_big.message(),
            "request has 9 images; variant v takes 1 to 8 per request (max_batch_size)");
  EXPECT_EQ(batcher_->QueueDepth(), 0);
  batcher_->Stop();
  EXPECT_EQ(completions_.count(), 0);
}

TEST_F(BatcherTest, DrainRunsQueuedWorkThenScheduleIsUnavailable) {
  Start(Options());
  for (int id = 1; id <= 3; ++id) ASSERT_TRUE(Submit(id).ok());
  // The fake clock never moves: draining does not wait for the delay.
  EXPECT_TRUE(batcher_->Drain(Clock::kInfiniteFuture).ok());
  EXPECT_EQ(completions_.count(), 3);
  for (int id = 1; id <= 3; ++id) EXPECT_EQ(completions_.CodeOf(id), absl::StatusCode::kOk);
  EXPECT_EQ(engine_.batches(), std::vector<std::vector<int>>({{1, 2, 3}}));

  EXPECT_TRUE(batcher_->IsDraining());
  const absl::Status late = Submit(4);
  EXPECT_EQ(late.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(late.message(), "variant v is draining");
  EXPECT_TRUE(batcher_->Drain(0).ok());  // idempotent
  EXPECT_TRUE(completions_.Of(4).empty());
}

TEST_F(BatcherTest, TasksStillQueuedWhenTheDrainGraceRunsOutAreUnavailable) {
  Start(Options());
  HoldWorker();
  for (int id = 1; id <= 3; ++id) ASSERT_TRUE(Submit(id).ok());
  absl::Status drained;
  std::thread drainer([&] { drained = batcher_->Drain(1000); });
  const absl::Time give_up = absl::Now() + kRealTimeout;
  while (!batcher_->IsDraining() && absl::Now() < give_up) std::this_thread::yield();
  clock_.AdvanceMicros(1000);
  ReleaseWorker();
  drainer.join();

  EXPECT_EQ(drained.code(), absl::StatusCode::kDeadlineExceeded);
  for (int id = 1; id <= 3; ++id)
    EXPECT_EQ(completions_.CodeOf(id), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(engine_.batches().empty());
}

TEST_F(BatcherTest, DestructorRunsPendingWorkAndJoins) {
  Start(Options());
  for (int id = 1; id <= 5; ++id) ASSERT_TRUE(Submit(id).ok());
  ExpectWorkerSleepsUntil(kStartUs + 2000);
  batcher_.reset();
  EXPECT_EQ(completions_.count(), 5);
  for (int id = 1; id <= 5; ++id) EXPECT_EQ(completions_.CodeOf(id), absl::StatusCode::kOk);
  EXPECT_EQ(engine_.batches(), std::vector<std::vector<int>>({{1, 2, 3, 4, 5}}));
}

TEST_F(BatcherTest, ConcurrentProducersEveryTaskCompletedExactlyOnce) {
  constexpr int kProducers = 4;
  constexpr int kTasksEach = 200;
  BatcherOptions options = Options();
  options.max_batch_size = 8;
  options.max_queue_size = 0;  // unbounded: every Schedule must succeed
  Start(options);

  std::map<int, int> images_of;
  for (int id = 0; id < kProducers * kTasksEach; ++id) images_of[id] = 1 + id % 3;
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kTasksEach; ++i) {
        const int id = p * kTasksEach + i;
        EXPECT_TRUE(Submit(id, images_of.at(id)).ok());
      }
    });
  }
  for (auto& producer : producers) producer.join();
  batcher_->Stop();  // whatever waits for the delay goes now

  ASSERT_EQ(completions_.count(), kProducers * kTasksEach);
  for (const auto& [id, images] : images_of) {
    EXPECT_EQ(completions_.CodeOf(id), absl::StatusCode::kOk);
  }
  std::vector<int> seen;
  const auto batches = engine_.batches();
  const auto batch_images = engine_.batch_images();
  for (size_t b = 0; b < batches.size(); ++b) {
    EXPECT_LE(batch_images[b], options.max_batch_size);
    EXPECT_GE(batch_images[b], 1);
    seen.insert(seen.end(), batches[b].begin(), batches[b].end());
  }
  std::sort(seen.begin(), seen.end());
  ASSERT_EQ(seen.size(), images_of.size());
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], static_cast<int>(i));
  // Batches formed: 800 tasks averaging 2 images fill ~200 batches of up to 8 images.
  EXPECT_LT(batches.size(), images_of.size() / 2);
}

TEST_F(BatcherTest, TasksProcessBatchLeavesUncompletedGetInternal) {
  BatcherOptions options = Options();
  options.max_queue_delay_us = 0;
  int calls = 0;
  auto batcher = TestBatcher::Create(options, [&](std::vector<std::unique_ptr<TestTask>>& batch) {
    ++calls;
    if (calls == 1) return;  // forgets to complete
    if (calls == 2) batch[0]->Complete(absl::OkStatus());
    throw std::runtime_error("engine exploded");
  });
  ASSERT_TRUE(batcher.ok());
  for (int id = 1; id <= 3; ++id) {
    ASSERT_TRUE((*batcher)->Schedule(MakeTask(id)).ok());
    ASSERT_TRUE(completions_.WaitForCount(id));
  }
  (*batcher)->Stop();
  EXPECT_EQ(completions_.CodeOf(1), absl::StatusCode::kInternal);
  EXPECT_EQ(completions_.CodeOf(2), absl::StatusCode::kOk);  // completed before the throw
  EXPECT_EQ(completions_.CodeOf(3), absl::StatusCode::kInternal);
  EXPECT_EQ(completions_.Of(3)[0].message(), "ProcessBatch of variant v threw: engine exploded");
}

}  // namespace
}  // namespace vitq::server
