// Shared fixture and helpers of the end-to-end tests of VitqServer (kserve_test.cc,
// classifier_test.cc, serving_behaviour_test.cc): the generated C++ stubs of KServe v2
// (inference.GRPCInferenceService), vitq.v1.Classifier and grpc.health.v1.Health talk to a server
// in this process over a real loopback port. It serves one model, "tiny" (a random DeiT on 28×28
// gray images, 10 named classes), as two variants: "a" and "b", built from different seeds so that
// their logits tell them apart. Expected logits come from a second RandomModel with the same seed.
//
// Nothing sleeps to wait for timing. Real time appears as guards (call deadlines, waits with a
// timeout) that turn a hang into a failure, as the request timeouts of the deadline tests, and as
// the slow model that lets a queue fill up. Each test starts its own server (isolated metrics);
// start-up is dominated by the variants' warm-up, so most tests keep max_batch_size small and
// serve only the variant they need.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "backends/model.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/server.h"
#include "vitq/v1/classifier.grpc.pb.h"

namespace vitq::server::testing {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using v1::ClassifyRequest;
using v1::ClassifyResponse;

inline constexpr char kModel[] = "tiny";
inline constexpr int64_t kImageSize = 28;
inline constexpr int64_t kImageElements = kImageSize * kImageSize;  // one channel
inline constexpr int64_t kClasses = 10;
inline constexpr uint64_t kSeedA = 1;
inline constexpr uint64_t kSeedB = 2;
inline const std::vector<std::string> kLabels = {"t-shirt", "trouser", "pullover", "dress", "coat",
                                                 "sandal",  "shirt",   "sneaker",  "bag",   "boot"};
// Guards: every call and every wait ends, so a bug fails a test instead of hanging it.
inline constexpr auto kCallTimeout = std::chrono::seconds(20);
inline const absl::Duration kWaitTimeout = absl::Seconds(30);
// Bytes that no image decoder accepts.
inline const std::string kGarbage = "this is not an image, just some bytes";

// ---- Models and servers ----

// The "tiny" model: a DeiT on 28×28 gray images, 10 labelled classes, fast to warm up.
ModelConfig TinyConfig();

// Same input and classes, but 784 tokens of width 64 in two blocks: its forward pass is slow
// enough (milliseconds) for concurrent requests to pile up in the queue behind it.
ModelConfig SlowConfig();

// What ServerTest::Start serves: the model, the batching of each variant, the A/B weights.
struct ServerSetup {
  ModelConfig model = TinyConfig();
  // Each variant warms up every batch size up to max_batch_size, a few forward passes each.
  BatcherOptions batching = [] {
    BatcherOptions b;
    b.max_batch_size = 4;
    b.max_queue_delay_us = 0;  // sequential tests need no batching delay
    return b;
  }();
  double weight_a = 1;
  double weight_b = 1;
  bool serve_b = true;  // false: "a" is the only variant
};

// For tests where variant "b" plays no part: half the start-up (warm-up) time.
ServerSetup OnlyA();

// ---- Inputs and expected outputs ----

// (n, 1, 28, 28) values drawn from N(0, 1).
std::vector<float> RandomImages(int64_t n, uint32_t seed);

// A 28×28 8-bit gray PNG with a pattern that depends on `seed`.
std::string EncodePng(uint32_t seed);

// What the server should compute for a PNG: the model's own preprocessing, (1, 28, 28).
std::vector<float> PreprocessPng(const std::string& png);

// The index of the largest of the `n` values at `row`: the top-1 class.
int64_t ArgMax(const float* row, int64_t n);

// Expects the two logit vectors to have the same size and to agree within 1e-5 element-wise.
void ExpectLogitsNear(const std::vector<float>& actual, const std::vector<float>& expected);

// ---- KServe requests and responses ----

// A ModelInfer request for `images`, (N, 1, 28, 28) as input "input", in raw_input_contents or
// in fp32_contents.
ModelInferRequest TensorInferRequest(const std::vector<float>& images, bool raw);

// BYTES elements in KServe's raw form: each a 4-byte little-endian length, then the bytes.
std::string RawBytesElements(const std::vector<std::string>& elements);

// A ModelInfer request for encoded image files as BYTES input "image", raw ([N]) or in
// bytes_contents ([N, 1]).
ModelInferRequest ImageInferRequest(const std::vector<std::string>& files, bool raw);

// Asks for the outputs `names` by name.
void RequestOutputs(ModelInferRequest& request, const std::vector<std::string>& names);

// The raw contents and shape of output `name`; nullptr when the response has no such output.
const std::string* RawOutput(const ModelInferResponse& response, const std::string& name,
                             std::vector<int64_t>* shape = nullptr);

// The FP32 values of output `name` (a failure and empty when it is missing).
std::vector<float> FloatOutput(const ModelInferResponse& response, const std::string& name);

// The BYTES elements of output `name`, decoded from KServe's raw form.
std::vector<std::string> BytesOutput(const ModelInferResponse& response, const std::string& name);

// ---- Classify requests ----

// A Classify request for one image given as a tensor of shape `shape`.
ClassifyRequest TensorClassifyRequest(const std::vector<float>& image, std::vector<int64_t> shape);

// A Classify request for one encoded image file.
ClassifyRequest ImageClassifyRequest(const std::string& file);

// ---- Metrics ----

// GET /metrics from the server's Prometheus endpoint, over a plain socket: the response body.
std::string HttpGetMetrics(int port);

// Sum of the samples of `series` (e.g. "vitq_batch_size_sum") in a text exposition whose labels
// include every one of `labels` (each `key="value"`).
double SampleSum(const std::string& exposition, const std::string& series,
                 const std::vector<std::string>& labels);

// ---- Calls in flight ----

// Unary calls started together on the callback API. Each has a deadline (a guard), so each ends;
// the destructor waits for them, since gRPC writes into them until then.
template <typename Request, typename Response>
class AsyncCalls {
 public:
  struct Call {
    grpc::ClientContext context;
    Request request;
    Response response;
    grpc::Status status;
  };
  // The stub's async() method: start(context, request, response, on_done).
  using StartFn = std::function<void(grpc::ClientContext*, const Request*, Response*,
                                     std::function<void(grpc::Status)>)>;

  explicit AsyncCalls(StartFn start) : start_(std::move(start)) {}
  ~AsyncCalls() {
    if (WaitAll()) return;
    for (auto& call : calls_) call->context.TryCancel();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &AsyncCalls::AllDone));
  }

  void Start(Request request) {
    calls_.push_back(std::make_unique<Call>());
    Call* call = calls_.back().get();
    call->request = std::move(request);
    call->context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    {
      absl::MutexLock lock(&mu_);
      ++started_;
    }
    start_(&call->context, &call->request, &call->response, [this, call](grpc::Status status) {
      absl::MutexLock lock(&mu_);
      call->status = std::move(status);
      ++finished_;
    });
  }

  // True once every call has its status (false when the guard ran out first).
  bool WaitAll() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(this, &AsyncCalls::AllDone), kWaitTimeout);
  }

  // Read after WaitAll.
  const std::vector<std::unique_ptr<Call>>& calls() const { return calls_; }

 private:
  bool AllDone() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return finished_ == started_; }

  const StartFn start_;
  std::vector<std::unique_ptr<Call>> calls_;  // touched by the test's thread only
  absl::Mutex mu_;
  int started_ ABSL_GUARDED_BY(mu_) = 0;
  int finished_ ABSL_GUARDED_BY(mu_) = 0;
};

// Concurrent Classify calls.
using AsyncClassify = AsyncCalls<ClassifyRequest, ClassifyResponse>;
// Concurrent KServe ModelInfer calls.
using AsyncInfer = AsyncCalls<ModelInferRequest, ModelInferResponse>;

// ---- The fixture ----

// Starts a server per test (Start) and calls it through the stubs, with a deadline on every call.
class ServerTest : public ::testing::Test {
 protected:
  // Serves "tiny" (variant "a", and "b" unless setup.serve_b is false) on 127.0.0.1 with `setup`,
  // and connects the stubs.
  void Start(const ServerSetup& setup = {});

  // A random model of the served config with weights from `seed` (nullptr and a failure on error).
  std::unique_ptr<Model> NewModel(uint64_t seed) const;

  // The logits (N, classes) variant `variant` must return for `images`, (N, 1, 28, 28).
  std::vector<float> Expected(const std::string& variant, const std::vector<float>& images);

  // A blocking ModelInfer call.
  grpc::Status Infer(const ModelInferRequest& request, ModelInferResponse* response);

  // A blocking Classify call; a non-empty `ab_key_metadata` goes in the x-vitq-ab-key header.
  grpc::Status Classify(const ClassifyRequest& request, ClassifyResponse* response,
                        const std::string& ab_key_metadata = "");

  // The status code of a ModelInfer call, its response dropped.
  grpc::StatusCode InferCode(const ModelInferRequest& request);

  // An empty set of concurrent Classify calls to this server.
  std::unique_ptr<AsyncClassify> ClassifyCalls();

  // An empty set of concurrent ModelInfer calls to this server.
  std::unique_ptr<AsyncInfer> InferCalls();

  // The health of `service` ("" for the whole server); the call's status goes to `status`.
  HealthCheckResponse::ServingStatus HealthOf(const std::string& service, grpc::Status* status);

  // The server's Prometheus exposition, as scraped now.
  std::string Metrics();

  // The served variant `name` of "tiny", from the current routing table.
  std::shared_ptr<Variant> VariantNamed(const std::string& name);

  ModelConfig config_;
  std::map<std::string, std::unique_ptr<Model>> references_;  // variant → identical model
  std::unique_ptr<VitqServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> kserve_;
  std::unique_ptr<v1::Classifier::Stub> classifier_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace vitq::server::testing
