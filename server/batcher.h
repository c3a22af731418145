// Dynamic batcher: one queue per model variant that groups inference requests ("tasks") into
// batches for the engine, with the semantics and option names of Triton's dynamic batcher
// (max_batch_size, preferred_batch_sizes, max_queue_delay_us, max_queue_size, per-request
// timeout, priority levels). It knows nothing of gRPC or of the engine: a task carries a payload
// of the caller's type, and the caller's ProcessBatch runs the model and completes the tasks.
//
//   auto batcher = Batcher<Request>::Create(options, [](auto& batch) { ...; t->Complete(s); });
//   auto task = std::make_unique<Batcher<Request>::TaskType>();
//   task->num_images = 2;  task->payload = ...;  task->done = [](absl::Status s) { ... };
//   absl::Status accepted = (*batcher)->Schedule(std::move(task));
//
// BATCHING RULE (Triton's src/dynamic_batch_scheduler.cc, GetDynamicBatch). Whenever a task
// arrives, a timer fires or a batch finishes, the worker first completes the queued tasks that
// have expired (DEADLINE_EXCEEDED) or been cancelled (CANCELLED). It then walks the queue in
// priority order, FIFO within a priority, adding whole tasks while the batch stays within
// max_batch_size images; the first task that does not fit ends the walk (tasks are never
// reordered to fill a gap, nor split). Let P be the preferred batch sizes ({max_batch_size} if
// none are given) and Pmax the largest of them. Then, in this order:
//   1. Preferred. If some prefix of the walk holds exactly a size in P, the longest such prefix
//      goes at once. If none does but the queue holds more than Pmax images, the longest prefix
//      within Pmax goes at once. (Skipped once the delay has expired and while draining: 3.)
//      So the batcher does not wait when it can form a preferred size, and it forms batches
//      larger than Pmax only after the delay.
//   2. Full. A walk of >= Pmax images (possible only as a single task that big) goes at once.
//   3. Delay. Once the oldest queued task has waited max_queue_delay_us, and always while
//      draining, the whole walk goes (up to max_batch_size images). With max_queue_delay_us = 0
//      whatever is queued goes at once, rule 1 still choosing a preferred size if it can.
//   4. Otherwise the worker sleeps until a new task arrives, the oldest task's delay expires,
//      or the earliest task deadline passes, whichever comes first.
// With the defaults (no preferred sizes) this reads: a batch goes as soon as max_batch_size
// images are queued or the next task would not fit, else when its oldest task has waited
// max_queue_delay_us. Note that a preferred size goes even if more tasks are waiting (they start
// the next batch); the largest preferred size the queue can make is the one chosen.
//
// TUNING. max_queue_delay_us trades latency for batch size: every request may wait up to that
// long (plus the batch in flight) when traffic is light; under load batches fill before the
// delay. Set max_batch_size to the largest batch the engine runs efficiently within the latency
// budget, and preferred_batch_sizes to the sizes it is tuned for (if any), so that those go
// without waiting. max_queue_size bounds memory and queueing time under overload: a full queue
// rejects with RESOURCE_EXHAUSTED so that clients back off instead of timing out. One worker
// runs one batch at a time per variant: the engine's own threads provide the parallelism.
//
// THREADS AND OWNERSHIP. Schedule, QueueDepth, IsDraining and Drain are thread-safe. Schedule
// takes ownership of the task. If it returns an error, the task is destroyed and its `done` is
// never called (the returned status is the answer). If it returns OK, `done` is called exactly
// once: by ProcessBatch via TaskBase::Complete, or by the batcher for a task that expired, was
// cancelled, or was still queued when a Drain's grace ran out. One worker thread per batcher
// forms batches and calls ProcessBatch, the observer and the `done` of dropped tasks, never with
// the batcher's lock held. Drain/Stop/the destructor stop accepting, run what is queued and join
// the worker.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/clock.h"

namespace vitq::server {

// Metrics hook. Called on the batcher's worker thread without the batcher's lock; one observer
// may serve several batchers only if it is thread-safe.
class BatchObserver {
 public:
  virtual ~BatchObserver() = default;
  // A batch of `num_tasks` tasks holding `num_images` images is about to be processed.
  virtual void OnBatch(int num_tasks, int num_images) = 0;
  // A task left the queue after `queue_time_us` microseconds: into a batch (`outcome` OK), or
  // dropped (DEADLINE_EXCEEDED, CANCELLED, or UNAVAILABLE when a Drain's grace ran out).
  virtual void OnTaskDequeued(absl::StatusCode outcome, int64_t queue_time_us) = 0;
};

struct BatcherOptions {
  // Name of the variant this queue serves, for error messages ("queue of variant X is full
  // (256 requests)") and metric labels. Default "default".
  std::string name = "default";

  // Largest batch handed to ProcessBatch, in images (a task may carry several). Must be >= 1.
  // A task with more images is rejected by Schedule with INVALID_ARGUMENT: tasks are never
  // split across batches. Default 8.
  int max_batch_size = 8;

  // Batch sizes, in images, that the engine runs best at. Each must be in [1, max_batch_size];
  // order and duplicates do not matter. The batcher dispatches a batch of one of these sizes as
  // soon as the queue can form it, without waiting for max_queue_delay_us, and forms batches
  // larger than the largest of them only once the delay has expired (rule 1 above).
  // Default empty, which means {max_batch_size}.
  std::vector<int> preferred_batch_sizes;

  // How long, in microseconds, the oldest queued task may wait for its batch to fill. When it
  // has waited this long, everything that fits goes in one batch. 0 = never wait: whatever is
  // queued goes as soon as the worker is free (batches still form while a batch is running).
  // Must be >= 0. Default 2000 (2 ms).
  int64_t max_queue_delay_us = 2000;

  // Most tasks (requests, not images) that may wait in the queue, all priorities together;
  // tasks in the batch being processed do not count. When it is reached, Schedule returns
  // RESOURCE_EXHAUSTED ("queue of variant X is full (256 requests)") and queues nothing.
  // 0 = unbounded. Must be >= 0. Default 256.
  int max_queue_size = 256;

  // Timeout, in microseconds after Schedule, for a task that has no deadline of its own
  // (TaskBase::deadline_us == 0). A task still queued at its deadline is completed with
  // DEADLINE_EXCEEDED and never executed. 0 = no timeout. Must be >= 0. Default 0.
  int64_t default_timeout_us = 0;

  // Number of priority levels. A task's priority must be in [0, priority_levels), 0 being the
  // highest (else INVALID_ARGUMENT at Schedule). Batches take tasks of higher priority first,
  // FIFO within a level; lower levels wait while higher ones have work. Must be >= 1. Default 1.
  int priority_levels = 1;

  // Time source for delays and deadlines. Not owned; must outlive the batcher.
  // nullptr (default) = Clock::Real(). Tests pass a FakeClock.
  Clock* clock = nullptr;

  // Metrics hook. Not owned; must outlive the batcher. nullptr (default) = none.
  BatchObserver* observer = nullptr;
};

// INVALID_ARGUMENT naming the variant and the field when `options` are out of range.
absl::Status ValidateBatcherOptions(const BatcherOptions& options);

namespace internal {
class BatcherCore;
}  // namespace internal

// What the batcher needs to know of a request. Requests are Task<Payload> (below); the caller
// fills the public fields before Schedule and must not touch them while the task is queued.
class TaskBase {
 public:
  TaskBase() = default;
  TaskBase(const TaskBase&) = delete;
  TaskBase& operator=(const TaskBase&) = delete;
  virtual ~TaskBase() = default;

  // Images in this request: >= 1 and <= max_batch_size, else INVALID_ARGUMENT at Schedule.
  int num_images = 1;

  // Absolute deadline in microseconds on the batcher's clock (Batcher::clock().NowMicros() plus
  // the request's timeout); 0 = none, and then Schedule sets it from default_timeout_us. A task
  // still queued when the clock reaches it is completed with DEADLINE_EXCEEDED and never run;
  // Schedule rejects a task already past it with DEADLINE_EXCEEDED.
  int64_t deadline_us = 0;

  // In [0, priority_levels), 0 the highest.
  int priority = 0;

  // Returns true once the client has given up (e.g. grpc::CallbackServerContext::IsCancelled).
  // Empty = never. The worker polls it, with the queue lock held, each time it looks at the
  // queue (a task arrives, a delay or deadline timer fires, a batch finishes): it must be cheap,
  // must not block and must not call into the batcher. A task found cancelled is completed with
  // CANCELLED and never run. No wake-up comes with the cancellation itself: an idle worker next
  // looks within max_queue_delay_us, a busy one when its batch is done.
  std::function<bool()> is_cancelled;

  // Receives the outcome, exactly once, for every task Schedule accepted. Required.
  std::function<void(absl::Status)> done;

  // Calls done(status) unless it has been called already (then does nothing). Thread-safe.
  void Complete(absl::Status status);
  bool completed() const { return completed_.load(); }

  // When Schedule accepted the task, in microseconds on the batcher's clock.
  int64_t enqueue_time_us() const { return enqueue_time_us_; }

 private:
  friend class internal::BatcherCore;
  int64_t enqueue_time_us_ = 0;
  std::atomic<bool> completed_{false};
};

// A request with a payload of the caller's type (the image tensor, the RPC reactor, ...).
template <typename Payload>
class Task final : public TaskBase {
 public:
  Payload payload{};
};

namespace internal {

// The batching rule, fixed at Create from the options.
struct BatchingRule {
  int max_batch_size = 8;
  std::vector<int> preferred;  // ascending, unique, non-empty, each in [1, max_batch_size]
  int64_t max_queue_delay_us = 0;
};

struct BatchDecision {
  int num_tasks = 0;    // > 0: dispatch this many tasks from the head of the queue now
  int64_t wait_us = 0;  // when num_tasks == 0: time left until the oldest task's delay expires
};

// The rule documented at the top of this file, as a pure function. `task_images`: images of the
// queued tasks in batching order (non-empty; only the first max_batch_size + 1 matter).
// `oldest_wait_us`: how long the oldest queued task has waited. `flush`: dispatch what fits
// regardless of the delay (draining).
BatchDecision PlanBatch(const BatchingRule& rule, const std::vector<int>& task_images,
                        int64_t oldest_wait_us, bool flush);

// The batcher on type-erased tasks; Batcher<Payload> below is its typed face.
class BatcherCore {
 public:
  using ProcessBatchFn = std::function<void(std::vector<std::unique_ptr<TaskBase>>&)>;

  static absl::StatusOr<std::unique_ptr<BatcherCore>> Create(const BatcherOptions& options,
                                                             ProcessBatchFn process_batch);
  ~BatcherCore();
  BatcherCore(const BatcherCore&) = delete;
  BatcherCore& operator=(const BatcherCore&) = delete;

  absl::Status Schedule(std::unique_ptr<TaskBase> task) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Drain(int64_t grace_us) ABSL_LOCKS_EXCLUDED(mu_);
  int QueueDepth() const ABSL_LOCKS_EXCLUDED(mu_);
  bool IsDraining() const ABSL_LOCKS_EXCLUDED(mu_);
  const BatcherOptions& options() const { return options_; }
  Clock& clock() const { return *clock_; }

 private:
  // What the worker does next: decided under the lock, done outside it.
  struct Work {
    int64_t now_us = 0;
    std::vector<std::pair<std::unique_ptr<TaskBase>, absl::Status>> dropped;
    std::vector<std::unique_ptr<TaskBase>> batch;
    bool exit = false;  // the batcher is drained: finish this work and return
  };

  BatcherCore(const BatcherOptions& options, BatchingRule rule, ProcessBatchFn process_batch);

  absl::Status ValidateTask(const TaskBase& task) const;
  absl::Status Enqueue(std::unique_ptr<TaskBase> task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  Work NextWork() ABSL_LOCKS_EXCLUDED(mu_);
  // Moves expired and cancelled tasks (all of them if `everything`) into work.dropped.
  void DropTasks(bool everything, Work& work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DropReason(const TaskBase& task, int64_t now_us) const;
  BatchDecision Plan(int64_t now_us) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TakeBatch(int num_tasks, Work& work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t EarliestDeadline() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasNews() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(Work& work) ABSL_LOCKS_EXCLUDED(mu_);
  void RunBatch(std::vector<std::unique_ptr<TaskBase>>& batch, int64_t now_us)
      ABSL_LOCKS_EXCLUDED(mu_);

  const BatcherOptions options_;
  const BatchingRule rule_;
  Clock* const clock_;
  const ProcessBatchFn process_batch_;

  mutable absl::Mutex mu_;
  // One FIFO per priority level, indexed by priority.
  std::vector<std::deque<std::unique_ptr<TaskBase>>> queues_ ABSL_GUARDED_BY(mu_);
  int num_queued_ ABSL_GUARDED_BY(mu_) = 0;
  // Bumped by every Schedule and Drain; the idle worker sleeps until it moves past
  // seen_generation_ (or a timer fires).
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t seen_generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // Queued tasks still waiting at this time are completed with UNAVAILABLE.
  int64_t drain_deadline_us_ ABSL_GUARDED_BY(mu_) = Clock::kInfiniteFuture;
  int num_dropped_by_drain_ ABSL_GUARDED_BY(mu_) = 0;

  std::once_flag join_once_;
  std::thread worker_;         // started by Create, joined by the first Drain
  std::thread::id worker_id_;  // set by Create; unlike worker_, stays valid after the join
};

}  // namespace internal

// The batcher for tasks of type Task<Payload>. See the top of this file.
template <typename Payload>
class Batcher {
 public:
  using TaskType = Task<Payload>;

  // Runs the model on `batch` (the tasks in batching order; their images sum to at most
  // max_batch_size) and completes every task with TaskBase::Complete, on the worker thread. It
  // may move tasks out of the vector to complete them later, elsewhere; a task left in the
  // vector uncompleted when it returns is completed with INTERNAL. It must not throw (if it
  // does, its uncompleted tasks get INTERNAL) and must not Drain, Stop or destroy this batcher.
  using ProcessBatchFn = std::function<void(std::vector<std::unique_ptr<TaskType>>& batch)>;

  // INVALID_ARGUMENT if an option is out of range or `process_batch` is empty. Starts the
  // worker thread.
  static absl::StatusOr<std::unique_ptr<Batcher>> Create(const BatcherOptions& options,
                                                         ProcessBatchFn process_batch);

  // Stop(): runs everything still queued, then joins the worker.
  ~Batcher() = default;

  // Queues `task`. Errors (the task is then destroyed, its `done` never called):
  //   INVALID_ARGUMENT   num_images or priority out of range, or no `done`;
  //   RESOURCE_EXHAUSTED the queue holds max_queue_size tasks;
  //   DEADLINE_EXCEEDED  the task's deadline has already passed;
  //   UNAVAILABLE        Drain/Stop has started ("variant X is draining").
  absl::Status Schedule(std::unique_ptr<TaskType> task) { return core_->Schedule(std::move(task)); }

  // Stops accepting tasks (Schedule returns UNAVAILABLE from now on), dispatches everything
  // queued without waiting for max_queue_delay_us, and joins the worker. Tasks still queued
  // `grace_us` microseconds (on the batcher's clock) after the first Drain call are completed
  // with UNAVAILABLE instead of run; the batch in flight always finishes. Returns OK if every
  // queued task ran (or expired or was cancelled as usual), DEADLINE_EXCEEDED if the grace ran
  // out. Thread-safe and idempotent: later calls may shorten the grace, and all return once the
  // worker has exited. Must not be called from ProcessBatch (FAILED_PRECONDITION).
  absl::Status Drain(int64_t grace_us) { return core_->Drain(grace_us); }

  // Drain with no time limit.
  void Stop() { core_->Drain(Clock::kInfiniteFuture).IgnoreError(); }

  // Tasks waiting in the queue (not those in the batch being processed).
  int QueueDepth() const { return core_->QueueDepth(); }
  bool IsDraining() const { return core_->IsDraining(); }

  const BatcherOptions& options() const { return core_->options(); }
  // The clock deadlines are measured on: deadline_us = clock().NowMicros() + timeout_us.
  Clock& clock() const { return core_->clock(); }

 private:
  explicit Batcher(std::unique_ptr<internal::BatcherCore> core) : core_(std::move(core)) {}

  // Hands the type-erased batch to `process_batch` as typed tasks, and back.
  static void ProcessTyped(const ProcessBatchFn& process_batch,
                           std::vector<std::unique_ptr<TaskBase>>& batch);

  std::unique_ptr<internal::BatcherCore> core_;
};

template <typename Payload>
absl::StatusOr<std::unique_ptr<Batcher<Payload>>> Batcher<Payload>::Create(
    const BatcherOptions& options, ProcessBatchFn process_batch) {
  if (!process_batch) {
    return absl::InvalidArgumentError("batcher for variant " + options.name +
                                      " needs a ProcessBatch callback");
  }
  auto erased = [fn = std::move(process_batch)](std::vector<std::unique_ptr<TaskBase>>& batch) {
    ProcessTyped(fn, batch);
  };
  absl::StatusOr<std::unique_ptr<internal::BatcherCore>> core =
      internal::BatcherCore::Create(options, std::move(erased));
  if (!core.ok()) return core.status();
  return std::unique_ptr<Batcher>(new Batcher(std::move(*core)));
}

template <typename Payload>
void Batcher<Payload>::ProcessTyped(const ProcessBatchFn& process_batch,
                                    std::vector<std::unique_ptr<TaskBase>>& batch) {
  std::vector<std::unique_ptr<TaskType>> typed;
  typed.reserve(batch.size());
  // Only Schedule(unique_ptr<TaskType>) feeds this core, so every task is a TaskType.
  for (auto& task : batch) typed.emplace_back(static_cast<TaskType*>(task.release()));
  auto give_back = [&] {
    batch.clear();
    for (auto& task : typed) batch.emplace_back(task.release());
  };
  try {
    process_batch(typed);
  } catch (...) {
    give_back();  // so that the core can complete what was left uncompleted
    throw;
  }
  give_back();
}

}  // namespace vitq::server
