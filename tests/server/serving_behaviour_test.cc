// End-to-end tests of how VitqServer serves, over a loopback port, whichever API is called: A/B
// routing, dynamic batching, a full queue, deadlines, health, drain and the Prometheus metrics.
// The fixture and helpers are in server_test_util.h.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/server/server_test_util.h"

namespace vitq::server::testing {
namespace {

// ---- Routing ----

TEST_F(ServerTest, ZeroWeightVariantGetsNoRoutedTraffic) {
  ServerSetup setup;
  setup.weight_b = 0;
  ASSERT_NO_FATAL_FAILURE(Start(setup));
  const std::vector<float> image = RandomImages(1, 17);
  for (int i = 0; i < 20; ++i) {
    ClassifyRequest request = TensorClassifyRequest(image, {1, 28, 28});
    if (i % 2) request.set_routing_key(absl::StrCat("user-", i));
    ClassifyResponse response;
    ASSERT_TRUE(Classify(request, &response).ok());
    EXPECT_EQ(response.variant(), "a");
    ModelInferResponse infer;
    ASSERT_TRUE(Infer(TensorInferRequest(image, true), &infer).ok());
    EXPECT_EQ(infer.model_version(), "a");
  }
  // Weight 0 keeps the variant loaded: it still answers when named.
  ClassifyRequest named = TensorClassifyRequest(image, {1, 28, 28});
  named.set_variant("b");
  ClassifyResponse response;
  ASSERT_TRUE(Classify(named, &response).ok());
  EXPECT_EQ(response.variant(), "b");
  EXPECT_EQ(response.routing_generation(), 0);
}

TEST_F(ServerTest, RoutingKeyKeepsItsVariant) {
  ASSERT_NO_FATAL_FAILURE(Start());  // weights 1:1
  const std::vector<float> image = RandomImages(1, 18);
  std::set<std::string> variants_seen;
  for (int k = 0; k < 20; ++k) {
    const std::string key = absl::StrCat("user-", k);
    std::set<std::string> answered_by;
    for (int call = 0; call < 3; ++call) {
      ClassifyRequest request = TensorClassifyRequest(image, {1, 28, 28});
      request.set_routing_key(key);
      ClassifyResponse response;
      ASSERT_TRUE(Classify(request, &response).ok());
      answered_by.insert(response.variant());
    }
    // The same key through KServe's "ab_key" parameter and through gRPC metadata.
    ModelInferRequest infer = TensorInferRequest(image, true);
    (*infer.mutable_parameters())["ab_key"].set_string_param(key);
    ModelInferResponse infer_response;
    ASSERT_TRUE(Infer(infer, &infer_response).ok());
    answered_by.insert(infer_response.model_version());
    ClassifyResponse by_metadata;
    ASSERT_TRUE(Classify(TensorClassifyRequest(image, {1, 28, 28}), &by_metadata, key).ok());
    answered_by.insert(by_metadata.variant());
    EXPECT_EQ(answered_by.size(), 1u) << "key " << key;
    variants_seen.insert(answered_by.begin(), answered_by.end());
  }
  EXPECT_EQ(variants_seen, (std::set<std::string>{"a", "b"}));
}

// ---- Batching and overload ----

TEST_F(ServerTest, ConcurrentRequestsAreBatchedAndAnsweredInOrder) {
  constexpr int kCalls = 64;
  ServerSetup setup = OnlyA();
  setup.batching.max_batch_size = 8;
  setup.batching.max_queue_delay_us = 100'000;  // batches fill before the delay runs out
  ASSERT_NO_FATAL_FAILURE(Start(setup));
  std::vector<std::vector<float>> images;
  std::unique_ptr<AsyncClassify> calls = ClassifyCalls();
  for (int i = 0; i < kCalls; ++i) {
    images.push_back(RandomImages(1, 200 + i));
    calls->Start(TensorClassifyRequest(images.back(), {1, 28, 28}));
  }
  ASSERT_TRUE(calls->WaitAll());
  for (int i = 0; i < kCalls; ++i) {
    const auto& call = *calls->calls()[i];
    ASSERT_TRUE(call.status.ok()) << i << ": " << call.status.error_message();
    // Each caller gets its own row of the batch.
    const std::vector<float> logits = Expected("a", images[i]);
    ASSERT_GT(call.response.classes_size(), 0);
    EXPECT_EQ(call.response.classes(0).index(), ArgMax(logits.data(), kClasses)) << i;
  }
  const std::string metrics = Metrics();
  const std::vector<std::string> a = {"model=\"tiny\"", "variant=\"a\""};
  const double images_batched = SampleSum(metrics, "vitq_batch_size_sum", a);
  const double batches = SampleSum(metrics, "vitq_batch_size_count", a);
  EXPECT_EQ(images_batched, kCalls);
  ASSERT_GT(batches, 0);
  EXPECT_GT(images_batched / batches, 1.0) << batches << " batches";
}

TEST_F(ServerTest, FullQueueAnswersResourceExhaustedAndLosesNothing) {
  constexpr int kCalls = 24;
  ServerSetup setup = OnlyA();
  setup.model = SlowConfig();
  setup.batching.max_batch_size = 1;
  setup.batching.max_queue_size = 1;
  ASSERT_NO_FATAL_FAILURE(Start(setup));
  std::unique_ptr<AsyncClassify> calls = ClassifyCalls();
  for (int i = 0; i < kCalls; ++i)
    calls->Start(TensorClassifyRequest(RandomImages(1, i), {1, 28, 28}));
  ASSERT_TRUE(calls->WaitAll());
  int ok = 0, exhausted = 0;
  for (const auto& call : calls->calls()) {
    if (call->status.ok()) {
      ++ok;
    } else if (call->status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++exhausted;
      EXPECT_NE(call->status.error_message().find("full"), std::string::npos)
          << call->status.error_message();
    } else {
      ADD_FAILURE() << "unexpected " << call->status.error_code() << ": "
                    << call->status.error_message();
    }
  }
  EXPECT_EQ(ok + exhausted, kCalls);
  EXPECT_GE(ok, 1);
  EXPECT_GE(exhausted, 1);
  const std::string metrics = Metrics();
  EXPECT_EQ(SampleSum(metrics, "vitq_requests_total",
                      {"api=\"classify\"", "code=\"RESOURCE_EXHAUSTED\"", "variant=\"a\""}),
            exhausted);
  EXPECT_EQ(SampleSum(metrics, "vitq_requests_total", {"api=\"classify\"", "code=\"OK\""}), ok);
  // Rejected requests leave no trace in the queue-depth gauge.
  EXPECT_EQ(SampleSum(metrics, "vitq_queue_depth", {"variant=\"a\""}), 0);
}

// ---- Deadlines ----

TEST_F(ServerTest, ExpiredTimeoutIsDeadlineExceeded) {
  ASSERT_NO_FATAL_FAILURE(Start(OnlyA()));
  // 1 µs has passed by the time the image is decoded: the request never reaches the queue.
  ClassifyRequest classify = ImageClassifyRequest(EncodePng(6));
  classify.set_timeout_us(1);
  ClassifyResponse response;
  EXPECT_EQ(Classify(classify, &response).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ModelInferRequest infer = ImageInferRequest({EncodePng(6)}, true);
  (*infer.mutable_parameters())["timeout_us"].set_int64_param(1);
  EXPECT_EQ(InferCode(infer), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server answered both (not the client's own deadline).
  const std::string metrics = Metrics();
  for (const char* api : {"api=\"classify\"", "api=\"kserve\""}) {
    EXPECT_EQ(SampleSum(metrics, "vitq_requests_total", {api, "code=\"DEADLINE_EXCEEDED\""}), 1)
        << api;
  }
}

TEST_F(ServerTest, RequestTimingOutInTheQueueIsDeadlineExceeded) {
  ServerSetup setup = OnlyA();
  setup.batching.max_queue_delay_us = 60'000'000;  // a lone request would wait a minute
  ASSERT_NO_FATAL_FAILURE(Start(setup));
  ClassifyRequest request = TensorClassifyRequest(RandomImages(1, 19), {1, 28, 28});
  request.set_timeout_us(50'000);
  ClassifyResponse response;
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = Classify(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // Dropped from the queue by the server at its deadline, not by the client's guard.
  EXPECT_NE(status.error_message().find("queue"), std::string::npos) << status.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  const std::string metrics = Metrics();
  EXPECT_EQ(SampleSum(metrics, "vitq_queue_duration_seconds_count", {"variant=\"a\""}), 1);
  EXPECT_EQ(SampleSum(metrics, "vitq_queue_depth", {"model=\"tiny\""}), 0);
}

// ---- Health and drain ----

TEST_F(ServerTest, HealthIsServingForTheServerAndEachModel) {
  ASSERT_NO_FATAL_FAILURE(Start(OnlyA()));
  grpc::Status status;
  EXPECT_EQ(HealthOf("", &status), HealthCheckResponse::SERVING);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(HealthOf("vitq.model.tiny", &status), HealthCheckResponse::SERVING);
  EXPECT_TRUE(status.ok()) << status.error_message();
  HealthOf("vitq.model.nope", &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, DrainTurnsHealthNotServingAndRefusesNewRequests) {
  ASSERT_NO_FATAL_FAILURE(Start(OnlyA()));
  // A watcher sees the change as it happens, while the server is still reachable.
  grpc::ClientContext watch_context;
  watch_context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  HealthCheckRequest watch_request;
  watch_request.set_service("vitq.model.tiny");
  auto watch = health_->Watch(&watch_context, watch_request);
  HealthCheckResponse update;
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), HealthCheckResponse::SERVING);

  bool drained_cleanly = false;
  std::thread drain([&] { drained_cleanly = server_->Drain(5.0); });
  const bool got_update = watch->Read(&update);
  watch_context.TryCancel();  // else the server's shutdown waits for this call
  watch->Finish().IgnoreError();
  drain.join();
  EXPECT_TRUE(got_update);
  EXPECT_EQ(update.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_TRUE(drained_cleanly);

  ClassifyResponse response;
  EXPECT_EQ(
      Classify(TensorClassifyRequest(RandomImages(1, 20), {1, 28, 28}), &response).error_code(),
      grpc::StatusCode::UNAVAILABLE);
  grpc::Status status;
  const HealthCheckResponse::ServingStatus health = HealthOf("", &status);
  if (status.ok()) {
    EXPECT_EQ(health, HealthCheckResponse::NOT_SERVING);
  } else {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  }
}

TEST_F(ServerTest, DrainRunsTheQueuedRequests) {
  constexpr int kCalls = 32;
  ServerSetup setup = OnlyA();
  // Just too large for the 32 requests to fill a batch: nothing leaves the queue until the drain.
  setup.batching.max_batch_size = kCalls + 1;
  setup.batching.max_queue_delay_us = 60'000'000;
  ASSERT_NO_FATAL_FAILURE(Start(setup));
  std::vector<std::vector<float>> images;
  std::unique_ptr<AsyncClassify> calls = ClassifyCalls();
  for (int i = 0; i < kCalls; ++i) {
    images.push_back(RandomImages(1, 300 + i));
    calls->Start(TensorClassifyRequest(images.back(), {1, 28, 28}));
  }
  // Wait (bounded) until every request is queued.
  std::shared_ptr<Variant> a = VariantNamed("a");
  const absl::Time give_up = absl::Now() + kWaitTimeout;
  while (a->queue_depth() < kCalls && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(a->queue_depth(), kCalls);

  EXPECT_TRUE(server_->Drain(5.0));
  ASSERT_TRUE(calls->WaitAll());
  for (int i = 0; i < kCalls; ++i) {
    const auto& call = *calls->calls()[i];
    ASSERT_TRUE(call.status.ok()) << i << ": " << call.status.error_message();
    const std::vector<float> logits = Expected("a", images[i]);
    ASSERT_GT(call.response.classes_size(), 0);
    EXPECT_EQ(call.response.classes(0).index(), ArgMax(logits.data(), kClasses)) << i;
  }
}

TEST_F(ServerTest, DrainWithoutGraceAnswersTheQueuedRequestsUnavailable) {
  constexpr int kCalls = 4;
  ServerSetup setup = OnlyA();
  setup.batching.max_batch_size = kCalls + 1;
  setup.batching.max_queue_delay_us = 60'000'000;
  ASSERT_NO_FATAL_FAILURE(Start(setup));
  std::unique_ptr<AsyncClassify> calls = ClassifyCalls();
  for (int i = 0; i < kCalls; ++i) {
    calls->Start(TensorClassifyRequest(RandomImages(1, 400 + i), {1, 28, 28}));
  }
  std::shared_ptr<Variant> a = VariantNamed("a");
  const absl::Time give_up = absl::Now() + kWaitTimeout;
  while (a->queue_depth() < kCalls && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(a->queue_depth(), kCalls);

  EXPECT_FALSE(server_->Drain(0.0));  // something was cut short
  ASSERT_TRUE(calls->WaitAll());
  for (const auto& call : calls->calls()) {
    EXPECT_EQ(call->status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_NE(call->status.error_message().find("draining"), std::string::npos)
        << call->status.error_message();
  }
}

// ---- Metrics ----

TEST_F(ServerTest, MetricsCountRequestsByModelVariantApiAndCode) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ClassifyRequest classify = TensorClassifyRequest(RandomImages(1, 21), {1, 28, 28});
  classify.set_variant("a");
  ClassifyResponse response;
  ASSERT_TRUE(Classify(classify, &response).ok());
  ModelInferRequest infer = TensorInferRequest(RandomImages(1, 21), true);
  infer.set_model_version("b");
  ASSERT_EQ(InferCode(infer), grpc::StatusCode::OK);
  infer.set_model_name("nope");
  ASSERT_EQ(InferCode(infer), grpc::StatusCode::NOT_FOUND);
  classify.set_model("nope");
  ASSERT_EQ(Classify(classify, &response).error_code(), grpc::StatusCode::NOT_FOUND);

  const std::string metrics = Metrics();
  const auto requests = [&](const char* api, const char* code, const char* model,
                            const char* variant) {
    return SampleSum(
        metrics, "vitq_requests_total",
        {absl::StrCat("api=\"", api, "\""), absl::StrCat("code=\"", code, "\""),
         absl::StrCat("model=\"", model, "\""), absl::StrCat("variant=\"", variant, "\"")});
  };
  EXPECT_EQ(requests("classify", "OK", "tiny", "a"), 1);
  EXPECT_EQ(requests("kserve", "OK", "tiny", "b"), 1);
  // Unknown names are not labels: a client must not create series at will.
  EXPECT_EQ(requests("kserve", "NOT_FOUND", "", ""), 1);
  EXPECT_EQ(requests("classify", "NOT_FOUND", "", ""), 1);
  EXPECT_EQ(metrics.find("nope"), std::string::npos);

  EXPECT_EQ(SampleSum(metrics, "vitq_request_duration_seconds_count",
                      {"api=\"classify\"", "model=\"tiny\"", "variant=\"a\""}),
            1);
  EXPECT_EQ(SampleSum(metrics, "vitq_request_duration_seconds_count",
                      {"api=\"kserve\"", "model=\"tiny\"", "variant=\"b\""}),
            1);
  EXPECT_EQ(
      SampleSum(metrics, "vitq_queue_duration_seconds_count", {"model=\"tiny\"", "variant=\"a\""}),
      1);
  for (const char* variant : {"variant=\"a\"", "variant=\"b\""}) {
    EXPECT_EQ(SampleSum(metrics, "vitq_variant_info",
                        {"model=\"tiny\"", variant, "precision=\"fp32\"", "arch=\"deit\""}),
              1)
        << variant;
  }
}

}  // namespace
}  // namespace vitq::server::testing
