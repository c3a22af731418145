#include "server/engine_thread.h"

#include <algorithm>
#include <utility>

namespace vitq::server {
namespace {

bool Never() { return false; }

}  // namespace

EngineThread& EngineThread::Shared() {
  // Never destroyed: variants held by static objects may still run calls during exit.
  static EngineThread* const shared = new EngineThread();
  return *shared;
}

EngineThread::EngineThread() : thread_([this] { Loop(); }) {}

EngineThread::~EngineThread() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_.notify_one();
  thread_.join();
}

bool EngineThread::Wait(Call& call, std::deque<Call*>& queue) {
  std::unique_lock<std::mutex> lock(mu_);
  queue.push_back(&call);
  DropStaleBackground();  // e.g. a background call of the caller's own variant
  work_.notify_one();
  finished_.wait(lock, [&call] { return call.done; });
  // An exception thrown by the work belongs to the caller, as if it had run the work itself.
  if (call.error) std::rethrow_exception(call.error);
  return call.ran;
}

void EngineThread::Run(absl::FunctionRef<void()> fn) {
  if (IsCurrent()) return fn();
  Call call{fn, Never, Clock::time_point::max()};
  Wait(call, normal_);
}

bool EngineThread::RunInBackground(absl::FunctionRef<void()> fn, Clock::time_point deadline,
                                   absl::FunctionRef<bool()> give_up) {
  if (IsCurrent()) {
    fn();
    return true;
  }
  Call call{fn, give_up, deadline};
  return Wait(call, background_);
}

void EngineThread::ChangeRealWork(int delta) {
  std::lock_guard<std::mutex> lock(mu_);
  real_work_ += delta;
  if (background_.empty()) return;  // nobody to tell
  // A waiting background call may give up now: answer it at once, even while a pass runs.
  DropStaleBackground();
  work_.notify_one();
}

void EngineThread::Recheck() {
  std::lock_guard<std::mutex> lock(mu_);
  DropStaleBackground();
  work_.notify_one();
}

int EngineThread::Queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(normal_.size() + background_.size());
}

void EngineThread::Finish(Call* call, bool ran) {
  call->done = true;
  call->ran = ran;
  finished_.notify_all();
}

void EngineThread::DropStaleBackground() {
  const Clock::time_point now = Clock::now();
  auto dropped = std::stable_partition(background_.begin(), background_.end(), [now](Call* c) {
    return now < c->deadline && !c->give_up();
  });
  for (auto it = dropped; it != background_.end(); ++it) Finish(*it, /*ran=*/false);
  background_.erase(dropped, background_.end());
}

EngineThread::Call* EngineThread::NextCall() {
  DropStaleBackground();
  std::deque<Call*>* queue = &normal_;
  if (queue->empty()) {
    if (background_.empty() || (real_work_ > 0 && !stopping_)) return nullptr;
    queue = &background_;
  }
  Call* call = queue->front();
  queue->pop_front();
  return call;
}

void EngineThread::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (Call* call = NextCall()) {
      lock.unlock();
      std::exception_ptr error;
      try {
        call->fn();
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      call->error = std::move(error);
      Finish(call, /*ran=*/true);
      continue;
    }
    if (stopping_ && normal_.empty() && background_.empty()) return;
    if (background_.empty()) {
      work_.wait(lock);
    } else {
      Clock::time_point earliest = Clock::time_point::max();
      for (const Call* c : background_) earliest = std::min(earliest, c->deadline);
      work_.wait_until(lock, earliest);
    }
  }
}

}  // namespace vitq::server
