// EngineThread: the one thread of the server process that runs engine code (describing and
// warming up a model, every forward pass; reading an artifact starts no OpenMP work and stays on
// the caller's thread). Callers hand it a function and wait for it to finish.
//
//   absl::StatusOr<Tensor> logits;
//   EngineThread::Shared().Run([&] { logits = model.Forward(images); });
//
// Why one thread: libgomp keeps an OpenMP thread pool for every thread that starts a parallel
// region, and once the pools' threads outnumber the cores it stops spinning between parallel
// regions and parks its threads on a futex. A forward pass has hundreds of regions, so each one
// then pays a wake-up: DeiT-S W8A8 at batch 1 took 10.9 ms on a process's only OpenMP thread and
// 19.9 ms once a second thread had a pool (`vitq bench --second-thread`, docs/PERFORMANCE.md).
// With every engine call on this thread the process has one pool, whatever the number of
// variants, batchers and gRPC threads.
// On a CPU-bound engine this also means one forward pass at a time, which is what the cores allow.
//
// Shadow copies run in the background: only while no real request is pending anywhere in the
// process (queued in a variant or being computed), so they never hold a real request back by
// more than the one background call already running.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "absl/functional/function_ref.h"

namespace vitq::server {

class EngineThread {
 public:
  // The process-wide engine thread, started on first use.
  static EngineThread& Shared();

  EngineThread();
  // Joins the thread. No call may be running or waiting (the shared one is never destroyed).
  ~EngineThread();
  EngineThread(const EngineThread&) = delete;
  EngineThread& operator=(const EngineThread&) = delete;

  // Runs `fn` on the engine thread and returns when it has finished; calls from several threads
  // run one at a time, in arrival order. Called on the engine thread itself, runs `fn` inline.
  // An exception `fn` throws is rethrown here, on the caller's thread.
  void Run(absl::FunctionRef<void()> fn);

  // Runs `fn` on the engine thread once no real work is pending (see RealWorkQueued) and no
  // normal call waits. Returns false, without running it, when `deadline` passes or `give_up()`
  // turns true first; `give_up` is checked whenever calls are queued or taken, the pending real
  // work changes or Recheck is called, under a lock: it must be cheap and must not call into the
  // EngineThread.
  bool RunInBackground(absl::FunctionRef<void()> fn, std::chrono::steady_clock::time_point deadline,
                       absl::FunctionRef<bool()> give_up);

  // Real requests accepted into some queue, and answered (or dropped): background calls wait
  // while the count is above zero.
  void RealWorkQueued() { ChangeRealWork(+1); }
  void RealWorkDone() { ChangeRealWork(-1); }

  // Checks the waiting background calls' deadlines and give_up() now (e.g. a variant draining).
  void Recheck();

  // Calls waiting for the engine thread (not counting the one running).
  int Queued() const;

  // True on the engine thread.
  bool IsCurrent() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  using Clock = std::chrono::steady_clock;
  struct Call {
    absl::FunctionRef<void()> fn;
    absl::FunctionRef<bool()> give_up;  // background calls only
    Clock::time_point deadline;         // background calls only
    bool done = false;
    bool ran = false;
    std::exception_ptr error = nullptr;  // thrown by fn
  };
  // Queues `call` and waits for it; returns whether it ran. Rethrows what it threw.
  bool Wait(Call& call, std::deque<Call*>& queue);
  void ChangeRealWork(int delta);
  void Loop();
  // The functions below need mu_.
  // The call to run next, or null.
  Call* NextCall();
  // Answers (without running) the background calls past their deadline or giving up.
  void DropStaleBackground();
  void Finish(Call* call, bool ran);

  mutable std::mutex mu_;
  std::condition_variable work_;      // a call was queued, real work changed, or stopping
  std::condition_variable finished_;  // a call finished or was dropped
  std::deque<Call*> normal_;
  std::deque<Call*> background_;
  int64_t real_work_ = 0;
  bool stopping_ = false;
  std::thread thread_;  // last: its loop uses the members above
};

}  // namespace vitq::server
