#include "server/engine_thread.h"

#include <algorithm>

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

void EngineThread::Run(absl::FunctionRef<void()> fn) {
  if (IsCurrent()) {
    fn();
    return;
  }
  Call call{fn, Never, Clock::time_point::max()};
  std::unique_lock<std::mutex> lock(mu_);
  normal_.push_back(&call);
  work_.notify_one();
  finished_.wait(lock, [&call] { return call.done; });
}

bool EngineThread::RunInBackground(absl::FunctionRef<void()> fn, Clock::time_point deadline,
                                   absl::FunctionRef<bool()> give_up) {
  if (IsCurrent()) {
    fn();
    return true;
  }
  Call call{fn, give_up, deadline};
  std::unique_lock<std::mutex> lock(mu_);
  background_.push_back(&call);
  work_.notify_one();
  finished_.wait(lock, [&call] { return call.done; });
  return call.ran;
}

void EngineThread::ChangeRealWork(int delta) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    real_work_ += delta;
    if (background_.empty()) return;  // nobody to tell
  }
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

EngineThread::Call* EngineThread::NextCall() {
  if (!normal_.empty()) {
    Call* call = normal_.front();
    normal_.pop_front();
    return call;
  }
  const Clock::time_point now = Clock::now();
  auto dropped = std::stable_partition(background_.begin(), background_.end(), [now](Call* c) {
    return now < c->deadline && !c->give_up();
  });
  for (auto it = dropped; it != background_.end(); ++it) Finish(*it, /*ran=*/false);
  background_.erase(dropped, background_.end());
  if (background_.empty() || (real_work_ > 0 && !stopping_)) return nullptr;
  Call* call = background_.front();
  background_.pop_front();
  return call;
}

void EngineThread::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (Call* call = NextCall()) {
      lock.unlock();
      call->fn();
      lock.lock();
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
