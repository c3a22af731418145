// The engine thread: every call runs on that one thread, one at a time, none is lost, nested
// calls run inline; and a served variant does all its engine work there (describing its kernels,
// warm-up, every batch), whichever threads submit the requests. Variant::Load sends the loading
// there too.
#include "server/engine_thread.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "server/variant.h"

namespace vitq::server {
namespace {

std::thread::id EngineThreadId(EngineThread& engine) {
  std::thread::id id;
  engine.Run([&] { id = std::this_thread::get_id(); });
  return id;
}

TEST(EngineThread, RunsCallsOnItsOwnThreadAndReturnsAfterThem) {
  EngineThread engine;
  const std::thread::id engine_id = EngineThreadId(engine);
  EXPECT_NE(engine_id, std::this_thread::get_id());
  EXPECT_FALSE(engine.IsCurrent());
  int result = 0;
  engine.Run([&] {
    EXPECT_TRUE(engine.IsCurrent());
    result = 42;
  });
  EXPECT_EQ(result, 42);  // written before Run returned
}

TEST(EngineThread, CallsFromManyThreadsAllRunOnTheOneThreadOneAtATime) {
  EngineThread engine;
  const std::thread::id engine_id = EngineThreadId(engine);
  constexpr int kCallers = 8;
  constexpr int kCallsEach = 200;
  std::atomic<int> running{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> on_other_threads{0};
  int64_t counter = 0;  // unsynchronised on purpose: only the engine thread touches it
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&] {
      for (int i = 0; i < kCallsEach; ++i) {
        engine.Run([&] {
          if (running.fetch_add(1) != 0) overlaps.fetch_add(1);
          if (std::this_thread::get_id() != engine_id) on_other_threads.fetch_add(1);
          ++counter;
          running.fetch_sub(1);
        });
      }
    });
  }
  for (auto& t : callers) t.join();
  int64_t total = 0;
  engine.Run([&] { total = counter; });
  EXPECT_EQ(total, kCallers * kCallsEach);
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(on_other_threads.load(), 0);
}

constexpr auto kFarAway = std::chrono::hours(1);
bool Never() { return false; }

// Keeps an engine thread busy, from construction until Release(), so that calls queue behind it.
class EngineBlocker {
 public:
  explicit EngineBlocker(EngineThread& engine)
      : released_(release_.get_future().share()), thread_([this, &engine] {
          engine.Run([this] {
            started_.set_value();
            released_.wait();
          });
        }) {
    started_.get_future().wait();
  }
  ~EngineBlocker() { Release(); }
  void Release() {
    if (thread_.joinable()) {
      release_.set_value();
      thread_.join();
    }
  }

 private:
  std::promise<void> started_;
  std::promise<void> release_;
  std::shared_future<void> released_;
  std::thread thread_;  // last: it uses the members above
};

TEST(EngineThread, NormalCallsRunBeforeBackgroundCallsThatWaitedLonger) {
  EngineThread engine;
  EngineBlocker blocker(engine);  // until both calls below are queued
  std::mutex mu;
  std::vector<std::string> order;
  auto record = [&](const char* what) {
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(what);
  };
  bool background_ran = false;
  std::thread background([&] {
    background_ran = engine.RunInBackground([&] { record("background"); },
                                            std::chrono::steady_clock::now() + kFarAway, Never);
  });
  while (engine.Queued() < 1) std::this_thread::yield();
  std::thread normal([&] { engine.Run([&] { record("normal"); }); });
  while (engine.Queued() < 2) std::this_thread::yield();
  blocker.Release();
  for (std::thread* t : {&background, &normal}) t->join();
  EXPECT_TRUE(background_ran);
  EXPECT_EQ(order, (std::vector<std::string>{"normal", "background"}));
}

TEST(EngineThread, BackgroundCallWaitsUntilNoRealWorkIsPending) {
  EngineThread engine;
  engine.RealWorkQueued();
  engine.RealWorkQueued();
  std::atomic<bool> ran{false};
  bool returned = false;
  std::thread background([&] {
    returned = engine.RunInBackground([&] { ran = true; },
                                      std::chrono::steady_clock::now() + kFarAway, Never);
  });
  while (engine.Queued() < 1) std::this_thread::yield();
  engine.Run([] {});  // a normal call goes first, and the background one still waits
  engine.RealWorkDone();
  engine.Run([] {});
  EXPECT_FALSE(ran.load());  // one real request is still pending
  EXPECT_EQ(engine.Queued(), 1);
  engine.RealWorkDone();
  background.join();
  EXPECT_TRUE(returned);
  EXPECT_TRUE(ran.load());
}

TEST(EngineThread, BackgroundCallIsDroppedAtItsDeadline) {
  EngineThread engine;
  engine.RealWorkQueued();  // never done: the engine never becomes idle
  bool ran = false;
  const bool returned = engine.RunInBackground(
      [&] { ran = true; }, std::chrono::steady_clock::now() + std::chrono::milliseconds(20), Never);
  EXPECT_FALSE(returned);
  EXPECT_FALSE(ran);
  EXPECT_EQ(engine.Queued(), 0);
  engine.RealWorkDone();
}

TEST(EngineThread, BackgroundCallIsDroppedWhenItGivesUp) {
  EngineThread engine;
  engine.RealWorkQueued();
  std::atomic<bool> give_up{false};
  bool ran = false;
  bool returned = true;
  std::thread background([&] {
    returned =
        engine.RunInBackground([&] { ran = true; }, std::chrono::steady_clock::now() + kFarAway,
                               [&] { return give_up.load(); });
  });
  while (engine.Queued() < 1) std::this_thread::yield();
  give_up = true;
  engine.RealWorkQueued();  // the change of real work makes it look again
  background.join();
  EXPECT_FALSE(returned);
  EXPECT_FALSE(ran);
  engine.RealWorkDone();
  engine.RealWorkDone();
}

TEST(EngineThread, NestedCallRunsInlineInsteadOfDeadlocking) {
  EngineThread engine;
  int depth = 0;
  engine.Run([&] {
    engine.Run([&] { depth = 2; });
    if (depth == 2) depth = 3;
  });
  EXPECT_EQ(depth, 3);
}

TEST(EngineThread, AnExceptionReachesTheCallerAndTheThreadLivesOn) {
  EngineThread engine;
  EXPECT_THROW(engine.Run([] { throw std::runtime_error("engine failure"); }), std::runtime_error);
  int after = 0;
  engine.Run([&] { after = 1; });
  EXPECT_EQ(after, 1);
}

// Threads of this process now.
int64_t ProcessThreads() {
  return std::distance(std::filesystem::directory_iterator("/proc/self/task"),
                       std::filesystem::directory_iterator());
}

// Variant::Load reads artifacts on the caller's thread (a hot load must not hold up serving).
// That is only right while loading starts no OpenMP parallel region: one would give the caller
// an OpenMP pool of its own, whose extra thread stays, and the pools' threads would outnumber the
// cores again. Loaded on a fresh thread asking for 2 OpenMP threads: no thread appears.
TEST(EngineThread, LoadingStartsNoOpenMpThreads) {
  std::thread loader([] {
    omp_set_num_threads(2);
    const int64_t before = ProcessThreads();
    for (const char* name : {"fmnist-deit.w8a8", "fmnist-deit.w4a4", "fmnist-deit.qvit-w2a2",
                             "fmnist-swin.w8a8", "fmnist-swin.qvit-w4a4"}) {
      auto model = LoadModel(std::string(VITQ_MODELS_DIR) + "/" + name + ".safetensors", {});
      ASSERT_TRUE(model.ok()) << model.status();
    }
    EXPECT_EQ(ProcessThreads(), before);
    // The check can fail: a parallel region here adds the pool's thread.
    std::atomic<int> members{0};
#pragma omp parallel
    members.fetch_add(1);
    EXPECT_EQ(members.load(), 2);
    EXPECT_EQ(ProcessThreads(), before + 1);
  });
  loader.join();
}

// A stand-in model that records which threads run its engine code.
class ThreadRecordingModel final : public Model {
 public:
  explicit ThreadRecordingModel(ModelConfig config) : Model(std::move(config)) {}

  std::vector<std::vector<std::string>> DescribeKernels(int64_t) const override {
    Record();
    return {{"head", "fp32", "test"}};
  }
  std::set<std::thread::id> threads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return threads_;
  }
  int calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 protected:
  Tensor Run(const Tensor& images) const override {
    Record();
    return Tensor::Zeros({images.shape()[0], config_.num_classes});
  }

 private:
  void Record() const {
    std::lock_guard<std::mutex> lock(mu_);
    threads_.insert(std::this_thread::get_id());
    ++calls_;
  }
  mutable std::mutex mu_;
  mutable std::set<std::thread::id> threads_;
  mutable int calls_ = 0;
};

ModelConfig SmallConfig() {
  ModelConfig c;
  c.name = "recording";
  c.in_chans = 1;
  c.img_size = 4;
  c.num_classes = 3;
  return c;
}

TEST(EngineThread, VariantsDoAllTheirEngineWorkOnTheSharedEngineThread) {
  const std::thread::id engine_id = EngineThreadId(EngineThread::Shared());
  BatcherOptions batching;
  batching.max_batch_size = 4;
  batching.max_queue_delay_us = 0;
  std::vector<const ThreadRecordingModel*> models;
  std::vector<std::shared_ptr<Variant>> variants;
  for (const char* name : {"a", "b"}) {
    auto model = std::make_unique<ThreadRecordingModel>(SmallConfig());
    models.push_back(model.get());
    VariantConfig config;
    config.name = name;
    auto variant = Variant::FromModel("m", config, batching, std::move(model), nullptr);
    ASSERT_TRUE(variant.ok()) << variant.status();
    variants.push_back(*variant);
  }
  // Requests from several threads, to both variants at once.
  constexpr int kRequests = 50;
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kRequests; ++i) {
        std::promise<absl::Status> done;
        InferInput input;
        input.images.assign(16, 0.5f);
        absl::Status accepted = variants[(c + i) % 2]->Submit(
            std::move(input),
            [&done](absl::Status s, InferOutput) { done.set_value(std::move(s)); });
        ASSERT_TRUE(accepted.ok()) << accepted;
        if (done.get_future().get().ok()) answered.fetch_add(1);
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(answered.load(), 4 * kRequests);
  for (const ThreadRecordingModel* model : models) {
    // Describe (once) + warm-up (batch 1..4) + at least one batch per request served.
    EXPECT_GE(model->calls(), 1 + 4 + 1);
    EXPECT_EQ(model->threads(), std::set<std::thread::id>{engine_id});
  }
}

// A shadow batch waiting for idle engine time gives up as soon as a real request comes for its
// own variant: the copies are answered DEADLINE_EXCEEDED (dropped) and the real request runs.
TEST(EngineThread, AShadowBatchMakesWayForItsOwnVariantsRealRequest) {
  BatcherOptions batching;
  batching.max_batch_size = 4;
  batching.max_queue_delay_us = 0;
  VariantConfig config;
  config.name = "reference";
  auto variant = Variant::FromModel("m", config, batching,
                                    std::make_unique<ThreadRecordingModel>(SmallConfig()), nullptr);
  ASSERT_TRUE(variant.ok()) << variant.status();
  EngineThread& engine = EngineThread::Shared();
  EngineBlocker blocker(engine);
  auto submit = [&](bool background) {
    auto done = std::make_shared<std::promise<absl::Status>>();
    InferInput input;
    input.images.assign(16, 0.5f);
    input.background = background;
    input.deadline_us = Clock::Real()->NowMicros() + 60 * 1000000LL;  // not the reason to drop
    EXPECT_TRUE(
        (*variant)
            ->Submit(std::move(input), [done](absl::Status s, InferOutput) { done->set_value(s); })
            .ok());
    return done->get_future();
  };
  std::future<absl::Status> shadow = submit(true);
  while (engine.Queued() < 1) std::this_thread::yield();  // its batch waits in the background
  std::future<absl::Status> real = submit(false);
  EXPECT_EQ(shadow.get().code(), absl::StatusCode::kDeadlineExceeded);  // before the release
  blocker.Release();
  EXPECT_TRUE(real.get().ok());
}

}  // namespace
}  // namespace vitq::server
