#include "server/batcher.h"

#include <algorithm>
#include <exception>
#include <limits>

#include "absl/strings/str_cat.h"

namespace vitq::server {

void TaskBase::Complete(absl::Status status) {
  if (completed_.exchange(true)) return;
  if (done) done(std::move(status));
}

absl::Status ValidateBatcherOptions(const BatcherOptions& o) {
  const std::string where = absl::StrCat("batcher options of variant ", o.name, ": ");
  if (o.max_batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "max_batch_size must be >= 1, got ", o.max_batch_size));
  }
  for (int size : o.preferred_batch_sizes) {
    if (size < 1 || size > o.max_batch_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "preferred batch size ", size,
                       " is outside [1, max_batch_size = ", o.max_batch_size, "]"));
    }
  }
  if (o.max_queue_delay_us < 0 || o.default_timeout_us < 0 || o.max_queue_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "max_queue_delay_us, default_timeout_us and max_queue_size must be >= 0"));
  }
  if (o.priority_levels < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "priority_levels must be >= 1, got ", o.priority_levels));
  }
  return absl::OkStatus();
}

namespace internal {
namespace {

absl::Status Draining(const std::string& name) {
  return absl::UnavailableError(absl::StrCat("variant ", name, " is draining"));
}

BatchingRule MakeRule(const BatcherOptions& options) {
  BatchingRule rule;
  rule.max_batch_size = options.max_batch_size;
  rule.preferred = options.preferred_batch_sizes;
  // Triton's default: with no preferred size, the batcher aims for full batches.
  if (rule.preferred.empty()) rule.preferred.push_back(options.max_batch_size);
  std::sort(rule.preferred.begin(), rule.preferred.end());
  rule.preferred.erase(std::unique(rule.preferred.begin(), rule.preferred.end()),
                       rule.preferred.end());
  rule.max_queue_delay_us = options.max_queue_delay_us;
  return rule;
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  if (b > 0 && a > std::numeric_limits<int64_t>::max() - b) {
    return std::numeric_limits<int64_t>::max();
  }
  return a + b;
}

}  // namespace

BatchDecision PlanBatch(const BatchingRule& rule, const std::vector<int>& task_images,
                        int64_t oldest_wait_us, bool flush) {
  const int max_preferred = rule.preferred.back();
  int images = 0;           // in the walk so far
  int num_tasks = 0;        // in the walk so far
  int preferred_tasks = 0;  // the longest prefix that rule 1 would dispatch
  for (int task : task_images) {
    // The queue holds more than the largest preferred size: what fits within it is "preferred"
    // unless a prefix already hit a preferred size exactly.
    if (num_tasks > 0 && images + task > max_preferred && preferred_tasks == 0) {
      preferred_tasks = num_tasks;
    }
    if (images + task > rule.max_batch_size) break;
    images += task;
    ++num_tasks;
    if (std::binary_search(rule.preferred.begin(), rule.preferred.end(), images)) {
      preferred_tasks = num_tasks;
    }
  }
  if (num_tasks == 0) return {};

  const bool no_delay = rule.max_queue_delay_us == 0;
  const bool delay_expired = !no_delay && oldest_wait_us >= rule.max_queue_delay_us;
  if (preferred_tasks > 0 && !delay_expired && !flush) return {preferred_tasks, 0};  // rule 1
  if (images >= max_preferred || delay_expired || no_delay || flush) {
    return {num_tasks, 0};  // rules 2 and 3
  }
  return {0, rule.max_queue_delay_us - oldest_wait_us};  // rule 4
}

BatcherCore::BatcherCore(const BatcherOptions& options, BatchingRule rule,
                         ProcessBatchFn process_batch)
    : options_(options),
      rule_(std::move(rule)),
      clock_(options.clock != nullptr ? options.clock : Clock::Real()),
      process_batch_(std::move(process_batch)),
      queues_(options.priority_levels) {}

absl::StatusOr<std::unique_ptr<BatcherCore>> BatcherCore::Create(const BatcherOptions& options,
                                                                 ProcessBatchFn process_batch) {
  if (absl::Status valid = ValidateBatcherOptions(options); !valid.ok()) return valid;
  if (!process_batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("batcher for variant ", options.name, " needs a ProcessBatch callback"));
  }
  std::unique_ptr<BatcherCore> core(
      new BatcherCore(options, MakeRule(options), std::move(process_batch)));
  core->worker_ = std::thread([raw = core.get()] { raw->WorkerLoop(); });
  core->worker_id_ = core->worker_.get_id();
  return core;
}

BatcherCore::~BatcherCore() { Drain(Clock::kInfiniteFuture).IgnoreError(); }

// ---- Producers ----

absl::Status BatcherCore::ValidateTask(const TaskBase& task) const {
  if (task.num_images < 1 || task.num_images > options_.max_batch_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("request has ", task.num_images, " images; variant ", options_.name,
                     " takes 1 to ", options_.max_batch_size, " per request (max_batch_size)"));
  }
  if (task.priority < 0 || task.priority >= options_.priority_levels) {
    return absl::InvalidArgumentError(absl::StrCat("priority ", task.priority, " is outside [0, ",
                                                   options_.priority_levels, ") for variant ",
                                                   options_.name));
  }
  if (task.deadline_us < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("negative deadline ", task.deadline_us, " us for variant ", options_.name));
  }
  if (!task.done) {
    return absl::InvalidArgumentError(
        absl::StrCat("request for variant ", options_.name, " has no done callback"));
  }
  return absl::OkStatus();
}

absl::Status BatcherCore::Schedule(std::unique_ptr<TaskBase> task) {
  if (task == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("null request scheduled on variant ", options_.name));
  }
  if (absl::Status valid = ValidateTask(*task); !valid.ok()) return valid;
  absl::MutexLock lock(&mu_);
  return Enqueue(std::move(task));
}

absl::Status BatcherCore::Enqueue(std::unique_ptr<TaskBase> task) {
  if (draining_) return Draining(options_.name);
  if (options_.max_queue_size > 0 && num_queued_ >= options_.max_queue_size) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "queue of variant ", options_.name, " is full (", options_.max_queue_size, " requests)"));
  }
  const int64_t now_us = clock_->NowMicros();
  if (task->deadline_us == 0 && options_.default_timeout_us > 0) {
    task->deadline_us = SaturatingAdd(now_us, options_.default_timeout_us);
  }
  if (task->deadline_us != 0 && now_us >= task->deadline_us) {
    return absl::DeadlineExceededError(
        absl::StrCat("deadline passed before the request reached variant ", options_.name));
  }
  task->enqueue_time_us_ = now_us;
  queues_[task->priority].push_back(std::move(task));
  ++num_queued_;
  ++generation_;
  return absl::OkStatus();
}

int BatcherCore::QueueDepth() const {
  absl::MutexLock lock(&mu_);
  return num_queued_;
}

bool BatcherCore::IsDraining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

absl::Status BatcherCore::Drain(int64_t grace_us) {
  if (std::this_thread::get_id() == worker_id_) {
    return absl::FailedPreconditionError(
        absl::StrCat("Drain of variant ", options_.name, " called from its own ProcessBatch"));
  }
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    drain_deadline_us_ = std::min(
        drain_deadline_us_, SaturatingAdd(clock_->NowMicros(), std::max<int64_t>(grace_us, 0)));
    ++generation_;
  }
  std::call_once(join_once_, [this] { worker_.join(); });
  absl::MutexLock lock(&mu_);
  if (num_dropped_by_drain_ == 0) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat("drain grace of variant ", options_.name, " ran out; ", num_dropped_by_drain_,
                   " queued requests were completed with UNAVAILABLE"));
}

// ---- The worker ----

void BatcherCore::WorkerLoop() {
  for (;;) {
    Work work = NextWork();
    Finish(work);
    if (work.exit) return;
  }
}

BatcherCore::Work BatcherCore::NextWork() {
  absl::MutexLock lock(&mu_);
  for (;;) {
    Work work;
    work.now_us = clock_->NowMicros();
    const bool grace_over = draining_ && work.now_us >= drain_deadline_us_;
    DropTasks(/*everything=*/grace_over, work);
    if (draining_ && num_queued_ == 0) {
      work.exit = true;
      return work;
    }
    int64_t wake_us = Clock::kInfiniteFuture;
    if (num_queued_ > 0) {
      const BatchDecision decision = Plan(work.now_us);
      if (decision.num_tasks > 0) {
        TakeBatch(decision.num_tasks, work);
        return work;
      }
      wake_us = std::min(work.now_us + decision.wait_us, EarliestDeadline());
    }
    if (!work.dropped.empty()) return work;  // complete them now rather than after the sleep
    seen_generation_ = generation_;
    clock_->AwaitWithDeadline(mu_, absl::Condition(this, &BatcherCore::HasNews), wake_us);
  }
}

bool BatcherCore::HasNews() const { return generation_ != seen_generation_; }

absl::Status BatcherCore::DropReason(const TaskBase& task, int64_t now_us) const {
  const int64_t waited_us = now_us - task.enqueue_time_us_;
  if (task.deadline_us != 0 && now_us >= task.deadline_us) {
    return absl::DeadlineExceededError(absl::StrCat("deadline exceeded after ", waited_us,
                                                    " us in the queue of variant ", options_.name));
  }
  if (task.is_cancelled && task.is_cancelled()) {
    return absl::CancelledError(absl::StrCat("request cancelled after ", waited_us,
                                             " us in the queue of variant ", options_.name));
  }
  return absl::OkStatus();
}

void BatcherCore::DropTasks(bool everything, Work& work) {
  for (auto& queue : queues_) {
    auto kept = queue.begin();
    for (auto it = queue.begin(); it != queue.end(); ++it) {
      absl::Status reason = everything ? Draining(options_.name) : DropReason(**it, work.now_us);
      if (reason.ok()) {
        if (kept != it) *kept = std::move(*it);
        ++kept;
      } else {
        work.dropped.emplace_back(std::move(*it), std::move(reason));
      }
    }
    const auto num_dropped = static_cast<int>(queue.end() - kept);
    queue.erase(kept, queue.end());
    num_queued_ -= num_dropped;
    if (everything) num_dropped_by_drain_ += num_dropped;
  }
}

BatchDecision BatcherCore::Plan(int64_t now_us) const {
  // Each task has >= 1 image, so the walk never looks past max_batch_size + 1 tasks.
  const size_t horizon = static_cast<size_t>(rule_.max_batch_size) + 1;
  std::vector<int> task_images;
  task_images.reserve(horizon);
  int64_t oldest_us = Clock::kInfiniteFuture;
  for (const auto& queue : queues_) {
    if (!queue.empty()) oldest_us = std::min(oldest_us, queue.front()->enqueue_time_us_);
    for (const auto& task : queue) {
      if (task_images.size() == horizon) break;
      task_images.push_back(task->num_images);
    }
  }
  return PlanBatch(rule_, task_images, now_us - oldest_us, draining_);
}

void BatcherCore::TakeBatch(int num_tasks, Work& work) {
  work.batch.reserve(num_tasks);
  for (auto& queue : queues_) {
    while (!queue.empty() && static_cast<int>(work.batch.size()) < num_tasks) {
      work.batch.push_back(std::move(queue.front()));
      queue.pop_front();
    }
  }
  num_queued_ -= num_tasks;
}

int64_t BatcherCore::EarliestDeadline() const {
  int64_t earliest = Clock::kInfiniteFuture;
  for (const auto& queue : queues_) {
    for (const auto& task : queue) {
      if (task->deadline_us != 0) earliest = std::min(earliest, task->deadline_us);
    }
  }
  return earliest;
}

void BatcherCore::Finish(Work& work) {
  BatchObserver* observer = options_.observer;
  for (auto& [task, status] : work.dropped) {
    if (observer != nullptr) {
      observer->OnTaskDequeued(status.code(), work.now_us - task->enqueue_time_us_);
    }
    task->Complete(std::move(status));
  }
  if (!work.batch.empty()) RunBatch(work.batch, work.now_us);
}

void BatcherCore::RunBatch(std::vector<std::unique_ptr<TaskBase>>& batch, int64_t now_us) {
  if (BatchObserver* observer = options_.observer; observer != nullptr) {
    int num_images = 0;
    for (const auto& task : batch) {
      num_images += task->num_images;
      observer->OnTaskDequeued(absl::StatusCode::kOk, now_us - task->enqueue_time_us_);
    }
    observer->OnBatch(static_cast<int>(batch.size()), num_images);
  }
  absl::Status fallback = absl::InternalError(absl::StrCat(
      "ProcessBatch of variant ", options_.name, " returned without completing the request"));
  try {
    process_batch_(batch);
  } catch (const std::exception& e) {
    fallback = absl::InternalError(
        absl::StrCat("ProcessBatch of variant ", options_.name, " threw: ", e.what()));
  } catch (...) {
    fallback =
        absl::InternalError(absl::StrCat("ProcessBatch of variant ", options_.name, " threw"));
  }
  for (auto& task : batch) {
    if (task != nullptr && !task->completed()) task->Complete(fallback);
  }
}

}  // namespace internal
}  // namespace vitq::server
