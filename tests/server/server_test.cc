// End-to-end tests of VitqServer over a real loopback port: the generated C++ stubs of KServe v2
// (inference.GRPCInferenceService), vitq.v1.Classifier and grpc.health.v1.Health talk to a server
// in this process. It serves one model, "tiny" (a random DeiT on 28×28 gray images, 10 named
// classes), as two variants: "a" and "b", built from different seeds so that their logits tell
// them apart. Expected logits come from a second RandomModel with the same seed.
//
// Nothing sleeps to wait for timing. Real time appears as guards (call deadlines, waits with a
// timeout) that turn a hang into a failure, as the request timeouts of the deadline tests, and as
// the slow model that lets a queue fill up. Each test starts its own server (isolated metrics);
// start-up is dominated by the variants' warm-up, so most tests keep max_batch_size small and
// serve only the variant they need.
#include "server/server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "backends/model.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"
#include "preprocessing/image.h"
#include "server/model_io.h"
#include "vitq/v1/classifier.grpc.pb.h"

namespace vitq::server {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using v1::ClassifyRequest;
using v1::ClassifyResponse;

constexpr char kModel[] = "tiny";
constexpr int64_t kImageSize = 28;
constexpr int64_t kImageElements = kImageSize * kImageSize;  // one channel
constexpr int64_t kClasses = 10;
constexpr uint64_t kSeedA = 1;
constexpr uint64_t kSeedB = 2;
const std::vector<std::string> kLabels = {"t-shirt", "trouser", "pullover", "dress", "coat",
                                          "sandal",  "shirt",   "sneaker",  "bag",   "boot"};
// Guards: every call and every wait ends, so a bug fails a test instead of hanging it.
constexpr auto kCallTimeout = std::chrono::seconds(20);
const absl::Duration kWaitTimeout = absl::Seconds(30);

ModelConfig TinyConfig() {
  ModelConfig c;
  c.arch = Arch::kDeit;
  c.name = "tiny";
  c.img_size = kImageSize;
  c.in_chans = 1;
  c.patch_size = 7;
  c.embed_dim = 32;
  c.depth = 1;
  c.num_heads = 2;
  c.num_classes = kClasses;
  c.preprocess.mean = {0.5f};
  c.preprocess.std = {0.5f};
  c.preprocess.crop_pct = 1.0f;
  c.label_names = kLabels;
  return c;
}

// Same input and classes, but 784 tokens of width 64 in two blocks: its forward pass is slow
// enough (milliseconds) for concurrent requests to pile up in the queue behind it.
ModelConfig SlowConfig() {
  ModelConfig c = TinyConfig();
  c.patch_size = 1;
  c.embed_dim = 64;
  c.depth = 2;
  return c;
}

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
ServerSetup OnlyA() {
  ServerSetup setup;
  setup.serve_b = false;
  return setup;
}

// (n, 1, 28, 28) values drawn from N(0, 1).
std::vector<float> RandomImages(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> images(n * kImageElements);
  for (float& v : images) v = normal(rng);
  return images;
}

// A 28×28 8-bit gray PNG with a pattern that depends on `seed`.
std::string EncodePng(uint32_t seed) {
  std::mt19937 rng(seed);
  cv::Mat image(kImageSize, kImageSize, CV_8UC1);
  for (int y = 0; y < image.rows; ++y) {
    for (int x = 0; x < image.cols; ++x) {
      image.at<uint8_t>(y, x) = static_cast<uint8_t>((x * 9 + y * 5 * (seed % 3 + 1) + rng() % 64) % 256);
    }
  }
  std::vector<uint8_t> png;
  EXPECT_TRUE(cv::imencode(".png", image, png));
  return std::string(png.begin(), png.end());
}

const std::string kGarbage = "this is not an image, just some bytes";

// What the server should compute for a PNG: the model's own preprocessing.
std::vector<float> PreprocessPng(const std::string& png) {
  std::vector<float> chw;
  const absl::Status s = preprocessing::PreprocessImage(
      {reinterpret_cast<const uint8_t*>(png.data()), png.size()}, PreprocessOptionsFor(TinyConfig()),
      chw);
  EXPECT_TRUE(s.ok()) << s;
  return chw;
}

int64_t ArgMax(const float* row, int64_t n) { return std::max_element(row, row + n) - row; }

void ExpectLogitsNear(const std::vector<float>& actual, const std::vector<float>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-5) << "at " << i;
}

// ---- KServe requests and responses ----

ModelInferRequest TensorInferRequest(const std::vector<float>& images, bool raw) {
  ModelInferRequest request;
  request.set_model_name(kModel);
  auto* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype("FP32");
  for (int64_t d : {static_cast<int64_t>(images.size()) / kImageElements, int64_t{1}, kImageSize,
                    kImageSize}) {
    input->add_shape(d);
  }
  if (raw) {
    request.add_raw_input_contents()->assign(reinterpret_cast<const char*>(images.data()),
                                             images.size() * sizeof(float));
  } else {
    for (float v : images) input->mutable_contents()->add_fp32_contents(v);
  }
  return request;
}

// BYTES elements in KServe's raw form: each a 4-byte little-endian length, then the bytes.
std::string RawBytesElements(const std::vector<std::string>& elements) {
  std::string raw;
  for (const std::string& e : elements) {
    const uint32_t length = static_cast<uint32_t>(e.size());
    for (int b = 0; b < 4; ++b) raw.push_back(static_cast<char>((length >> (8 * b)) & 0xff));
    raw += e;
  }
  return raw;
}

ModelInferRequest ImageInferRequest(const std::vector<std::string>& files, bool raw) {
  ModelInferRequest request;
  request.set_model_name(kModel);
  auto* input = request.add_inputs();
  input->set_name("image");
  input->set_datatype("BYTES");
  input->add_shape(static_cast<int64_t>(files.size()));
  if (raw) {
    *request.add_raw_input_contents() = RawBytesElements(files);
  } else {
    input->add_shape(1);  // [N, 1] is accepted too
    for (const std::string& f : files) input->mutable_contents()->add_bytes_contents(f);
  }
  return request;
}

void RequestOutputs(ModelInferRequest& request, const std::vector<std::string>& names) {
  for (const std::string& name : names) request.add_outputs()->set_name(name);
}

// The raw contents and shape of output `name`; nullptr when the response has no such output.
const std::string* RawOutput(const ModelInferResponse& response, const std::string& name,
                             std::vector<int64_t>* shape = nullptr) {
  for (int i = 0; i < response.outputs_size(); ++i) {
    if (response.outputs(i).name() != name) continue;
    if (shape) shape->assign(response.outputs(i).shape().begin(), response.outputs(i).shape().end());
    if (i >= response.raw_output_contents_size()) return nullptr;
    return &response.raw_output_contents(i);
  }
  return nullptr;
}

std::vector<float> FloatOutput(const ModelInferResponse& response, const std::string& name) {
  const std::string* raw = RawOutput(response, name);
  EXPECT_NE(raw, nullptr) << "no output " << name;
  if (!raw) return {};
  std::vector<float> values(raw->size() / sizeof(float));
  std::memcpy(values.data(), raw->data(), values.size() * sizeof(float));
  return values;
}

std::vector<std::string> BytesOutput(const ModelInferResponse& response, const std::string& name) {
  const std::string* raw = RawOutput(response, name);
  EXPECT_NE(raw, nullptr) << "no output " << name;
  std::vector<std::string> elements;
  for (size_t pos = 0; raw && pos + 4 <= raw->size();) {
    uint32_t length = 0;
    for (int b = 0; b < 4; ++b) length |= static_cast<uint32_t>(static_cast<uint8_t>((*raw)[pos + b])) << (8 * b);
    pos += 4;
    EXPECT_LE(pos + length, raw->size());
    elements.push_back(raw->substr(pos, length));
    pos += length;
  }
  return elements;
}

// ---- Classify requests ----

ClassifyRequest TensorClassifyRequest(const std::vector<float>& image, std::vector<int64_t> shape) {
  ClassifyRequest request;
  request.set_model(kModel);
  for (int64_t d : shape) request.mutable_tensor()->add_shape(d);
  for (float v : image) request.mutable_tensor()->add_data(v);
  return request;
}

ClassifyRequest ImageClassifyRequest(const std::string& file) {
  ClassifyRequest request;
  request.set_model(kModel);
  request.set_image(file);
  return request;
}

// ---- Metrics ----

// GET /metrics from the server's Prometheus endpoint, over a plain socket: the response body.
std::string HttpGetMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  timeval timeout{10, 0};  // guard
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string get = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    EXPECT_EQ(send(fd, get.data(), get.size(), MSG_NOSIGNAL), static_cast<ssize_t>(get.size()));
    char buffer[4096];
    for (ssize_t n; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) response.append(buffer, n);
  }
  close(fd);
  EXPECT_EQ(response.rfind("HTTP/1.1 200", 0), 0u) << response.substr(0, 200);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// Sum of the samples of `series` (e.g. "vitq_batch_size_sum") in a text exposition whose labels
// include every one of `labels` (each `key="value"`).
double SampleSum(const std::string& exposition, const std::string& series,
                 const std::vector<std::string>& labels) {
  double sum = 0;
  std::istringstream lines(exposition);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t name_end = line.find_first_of("{ ");
    const size_t value_start = line.rfind(' ');
    if (name_end == std::string::npos || line.substr(0, name_end) != series) continue;
    const std::string label_text = line.substr(name_end, value_start - name_end);
    const bool match = std::all_of(labels.begin(), labels.end(), [&](const std::string& label) {
      return label_text.find("{" + label) != std::string::npos ||
             label_text.find("," + label) != std::string::npos;
    });
    if (match) sum += std::stod(line.substr(value_start + 1));
  }
  return sum;
}

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

using AsyncClassify = AsyncCalls<ClassifyRequest, ClassifyResponse>;
using AsyncInfer = AsyncCalls<ModelInferRequest, ModelInferResponse>;

// ---- The fixture ----

class ServerTest : public ::testing::Test {
 protected:
  // Serves "tiny" (variant "a", and "b" unless setup.serve_b is false) on 127.0.0.1 with `setup`,
  // and connects the stubs.
  void Start(const ServerSetup& setup = {}) {
    config_ = setup.model;
    auto metrics = std::make_unique<ServerMetrics>();
    std::map<std::string, std::vector<RoutingTable::Entry>> models;
    for (const auto& [name, seed, weight] : {std::tuple{"a", kSeedA, setup.weight_a},
                                             std::tuple{"b", kSeedB, setup.weight_b}}) {
      if (!setup.serve_b && std::string_view(name) == "b") continue;
      VariantConfig variant_config;
      variant_config.name = name;
      variant_config.weight = weight;
      absl::StatusOr<std::shared_ptr<Variant>> variant = Variant::FromModel(
          kModel, variant_config, setup.batching, NewModel(seed), metrics.get());
      ASSERT_TRUE(variant.ok()) << variant.status();
      models[kModel].push_back({*variant, weight});
      references_[name] = NewModel(seed);
    }
    absl::StatusOr<std::unique_ptr<ModelRepository>> repository =
        ModelRepository::FromVariants(models);
    ASSERT_TRUE(repository.ok()) << repository.status();
    ServerConfig config;
    config.listen = "127.0.0.1:0";
    config.metrics_listen = "127.0.0.1:0";
    config.drain_grace_s = 5;
    absl::StatusOr<std::unique_ptr<VitqServer>> server =
        VitqServer::StartWith(config, std::move(*repository), std::move(metrics));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_GT(server_->port(), 0);
    ASSERT_GT(server_->metrics_port(), 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    kserve_ = inference::GRPCInferenceService::NewStub(channel_);
    classifier_ = v1::Classifier::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
  }

  std::unique_ptr<Model> NewModel(uint64_t seed) const {
    absl::StatusOr<std::unique_ptr<Model>> model =
        RandomModel(config_, seed, UniformPlan(Precision::kFp32));
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? std::move(*model) : nullptr;
  }

  // The logits (N, classes) variant `variant` must return for `images`, (N, 1, 28, 28).
  std::vector<float> Expected(const std::string& variant, const std::vector<float>& images) {
    const int64_t n = static_cast<int64_t>(images.size()) / kImageElements;
    Tensor input({n, 1, kImageSize, kImageSize});
    std::copy(images.begin(), images.end(), input.data());
    absl::StatusOr<Tensor> logits = references_.at(variant)->Forward(input);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return {};
    return std::vector<float>(logits->data(), logits->data() + logits->numel());
  }

  grpc::Status Infer(const ModelInferRequest& request, ModelInferResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    return kserve_->ModelInfer(&context, request, response);
  }

  grpc::Status Classify(const ClassifyRequest& request, ClassifyResponse* response,
                        const std::string& ab_key_metadata = "") {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    if (!ab_key_metadata.empty()) context.AddMetadata("x-vitq-ab-key", ab_key_metadata);
    return classifier_->Classify(&context, request, response);
  }

  grpc::StatusCode InferCode(const ModelInferRequest& request) {
    ModelInferResponse response;
    return Infer(request, &response).error_code();
  }

  std::unique_ptr<AsyncClassify> ClassifyCalls() {
    return std::make_unique<AsyncClassify>([this](auto* context, auto* request, auto* response,
                                                  auto done) {
      classifier_->async()->Classify(context, request, response, std::move(done));
    });
  }

  std::unique_ptr<AsyncInfer> InferCalls() {
    return std::make_unique<AsyncInfer>([this](auto* context, auto* request, auto* response,
                                               auto done) {
      kserve_->async()->ModelInfer(context, request, response, std::move(done));
    });
  }

  HealthCheckResponse::ServingStatus HealthOf(const std::string& service, grpc::Status* status) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    HealthCheckRequest request;
    request.set_service(service);
    HealthCheckResponse response;
    *status = health_->Check(&context, request, &response);
    return response.status();
  }

  std::string Metrics() { return HttpGetMetrics(server_->metrics_port()); }

  std::shared_ptr<Variant> VariantNamed(const std::string& name) {
    return server_->repository().Find(kModel)->routing()->Find(name);
  }

  ModelConfig config_;
  std::map<std::string, std::unique_ptr<Model>> references_;  // variant → identical model
  std::unique_ptr<VitqServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> kserve_;
  std::unique_ptr<v1::Classifier::Stub> classifier_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// ---- KServe ----

TEST_F(ServerTest, KserveRawTensorGivesTheModelsLogitsProbabilitiesAndLabels) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::vector<float> images = RandomImages(3, 7);
  ModelInferRequest request = TensorInferRequest(images, /*raw=*/true);
  request.set_model_version("a");
  request.set_id("req-1");
  (*request.mutable_parameters())["topk"].set_int64_param(3);
  RequestOutputs(request, {"logits", "probabilities", "labels"});
  ModelInferResponse response;
  const grpc::Status status = Infer(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.model_name(), kModel);
  EXPECT_EQ(response.model_version(), "a");
  EXPECT_EQ(response.id(), "req-1");

  std::vector<int64_t> shape;
  ASSERT_NE(RawOutput(response, "logits", &shape), nullptr);
  EXPECT_EQ(shape, (std::vector<int64_t>{3, kClasses}));
  const std::vector<float> expected = Expected("a", images);
  ExpectLogitsNear(FloatOutput(response, "logits"), expected);

  const std::vector<float> probabilities = FloatOutput(response, "probabilities");
  ASSERT_EQ(probabilities.size(), static_cast<size_t>(3 * kClasses));
  ASSERT_NE(RawOutput(response, "labels", &shape), nullptr);
  EXPECT_EQ(shape, (std::vector<int64_t>{3, 3}));
  const std::vector<std::string> labels = BytesOutput(response, "labels");
  ASSERT_EQ(labels.size(), 9u);
  for (int64_t row = 0; row < 3; ++row) {
    const float* p = probabilities.data() + row * kClasses;
    double sum = 0;
    for (int64_t c = 0; c < kClasses; ++c) sum += p[c];
    EXPECT_NEAR(sum, 1.0, 1e-5) << "row " << row;
    EXPECT_EQ(labels[row * 3], kLabels[ArgMax(expected.data() + row * kClasses, kClasses)]);
    // The k labels of a row go from the most to the least probable.
    for (int64_t i = 1; i < 3; ++i) {
      const auto index = [&](const std::string& label) {
        return std::find(kLabels.begin(), kLabels.end(), label) - kLabels.begin();
      };
      EXPECT_GE(p[index(labels[row * 3 + i - 1])], p[index(labels[row * 3 + i])]);
    }
  }
}

TEST_F(ServerTest, KserveTensorInContentsGivesTheModelsLogits) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::vector<float> images = RandomImages(2, 8);
  ModelInferRequest request = TensorInferRequest(images, /*raw=*/false);
  request.set_model_version("b");
  ModelInferResponse response;
  const grpc::Status status = Infer(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.model_version(), "b");
  // No output asked for: logits only.
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).name(), "logits");
  ExpectLogitsNear(FloatOutput(response, "logits"), Expected("b", images));
}

TEST_F(ServerTest, KserveModelVersionNamesTheVariantThatAnswered) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::vector<float> images = RandomImages(1, 9);
  std::set<std::string> seen;
  for (int i = 0; i < 12; ++i) {
    ModelInferResponse response;
    ASSERT_TRUE(Infer(TensorInferRequest(images, true), &response).ok());
    const std::string variant = response.model_version();
    ASSERT_TRUE(variant == "a" || variant == "b") << variant;
    EXPECT_EQ(response.parameters().at("variant").string_param(), variant);
    ExpectLogitsNear(FloatOutput(response, "logits"), Expected(variant, images));
    seen.insert(variant);
  }
  EXPECT_FALSE(seen.empty());
}

TEST_F(ServerTest, KserveModelVersionOrVariantParameterSelectsTheVariant) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::vector<float> images = RandomImages(1, 10);
  for (int i = 0; i < 6; ++i) {
    for (const char* variant : {"a", "b"}) {
      ModelInferRequest by_version = TensorInferRequest(images, true);
      by_version.set_model_version(variant);
      ModelInferRequest by_parameter = TensorInferRequest(images, true);
      (*by_parameter.mutable_parameters())["variant"].set_string_param(variant);
      for (const ModelInferRequest* request : {&by_version, &by_parameter}) {
        ModelInferResponse response;
        ASSERT_TRUE(Infer(*request, &response).ok());
        EXPECT_EQ(response.model_version(), variant);
        ExpectLogitsNear(FloatOutput(response, "logits"), Expected(variant, images));
      }
    }
  }
  ModelInferRequest disagree = TensorInferRequest(images, true);
  disagree.set_model_version("a");
  (*disagree.mutable_parameters())["variant"].set_string_param("b");
  EXPECT_EQ(InferCode(disagree), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, KserveEncodedPngsArePreprocessedLikeTheModelExpects) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::vector<std::string> pngs = {EncodePng(1), EncodePng(2)};
  std::vector<float> images = PreprocessPng(pngs[0]);
  const std::vector<float> second = PreprocessPng(pngs[1]);
  images.insert(images.end(), second.begin(), second.end());
  ASSERT_EQ(images.size(), static_cast<size_t>(2 * kImageElements));
  const std::vector<float> expected = Expected("a", images);
  for (bool raw : {true, false}) {
    ModelInferRequest request = ImageInferRequest(pngs, raw);
    request.set_model_version("a");
    ModelInferResponse response;
    const grpc::Status status = Infer(request, &response);
    ASSERT_TRUE(status.ok()) << (raw ? "raw: " : "contents: ") << status.error_message();
    ExpectLogitsNear(FloatOutput(response, "logits"), expected);
  }
}

TEST_F(ServerTest, KserveMetadataDescribesTheModel) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const auto context = [] {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    return c;
  };
  inference::ServerReadyResponse server_ready;
  ASSERT_TRUE(kserve_->ServerReady(context().get(), {}, &server_ready).ok());
  EXPECT_TRUE(server_ready.ready());
  for (const auto& [name, version, ready] :
       {std::tuple{"tiny", "", true}, std::tuple{"tiny", "b", true},
        std::tuple{"tiny", "c", false}, std::tuple{"nope", "", false}}) {
    inference::ModelReadyRequest request;
    request.set_name(name);
    request.set_version(version);
    inference::ModelReadyResponse response;
    ASSERT_TRUE(kserve_->ModelReady(context().get(), request, &response).ok());
    EXPECT_EQ(response.ready(), ready) << name << " " << version;
  }
  inference::ModelMetadataRequest request;
  request.set_name(kModel);
  inference::ModelMetadataResponse metadata;
  ASSERT_TRUE(kserve_->ModelMetadata(context().get(), request, &metadata).ok());
  EXPECT_EQ(std::vector<std::string>(metadata.versions().begin(), metadata.versions().end()),
            (std::vector<std::string>{"a", "b"}));
  std::map<std::string, std::vector<int64_t>> inputs;
  for (const auto& t : metadata.inputs()) inputs[t.name()].assign(t.shape().begin(), t.shape().end());
  EXPECT_EQ(inputs["input"], (std::vector<int64_t>{-1, 1, kImageSize, kImageSize}));
  EXPECT_EQ(inputs["image"], (std::vector<int64_t>{-1}));
  ASSERT_GE(metadata.outputs_size(), 1);
  EXPECT_EQ(metadata.outputs(0).name(), "logits");
  EXPECT_EQ(metadata.outputs(0).shape(1), kClasses);
  request.set_name("nope");
  EXPECT_EQ(kserve_->ModelMetadata(context().get(), request, &metadata).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// ---- KServe errors ----

TEST_F(ServerTest, KserveUnknownModelOrVersionIsNotFound) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ModelInferRequest request = TensorInferRequest(RandomImages(1, 11), true);
  request.set_model_name("nope");
  EXPECT_EQ(InferCode(request), grpc::StatusCode::NOT_FOUND);
  request.set_model_name(kModel);
  request.set_model_version("c");
  EXPECT_EQ(InferCode(request), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, KserveUndecodableImageIsInvalidArgument) {
  ASSERT_NO_FATAL_FAILURE(Start(OnlyA()));
  ModelInferResponse response;
  const grpc::Status status = Infer(ImageInferRequest({kGarbage}, true), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("decode"), std::string::npos) << status.error_message();
}

TEST_F(ServerTest, KserveMalformedRequestsAreInvalidArgument) {
  ASSERT_NO_FATAL_FAILURE(Start(OnlyA()));
  const std::vector<float> one = RandomImages(1, 12);
  const std::map<std::string, std::function<void(ModelInferRequest&)>> cases = {
      {"three channels", [](ModelInferRequest& r) { r.mutable_inputs(0)->set_shape(1, 3); }},
      {"rank 3", [](ModelInferRequest& r) { r.mutable_inputs(0)->mutable_shape()->RemoveLast(); }},
      {"element count",
       [](ModelInferRequest& r) { r.mutable_raw_input_contents(0)->resize(783 * sizeof(float)); }},
      {"shape says 2 images", [](ModelInferRequest& r) { r.mutable_inputs(0)->set_shape(0, 2); }},
      {"two inputs",
       [](ModelInferRequest& r) {
         *r.add_inputs() = r.inputs(0);
         *r.add_raw_input_contents() = r.raw_input_contents(0);
       }},
      {"unknown input", [](ModelInferRequest& r) { r.mutable_inputs(0)->set_name("pixels"); }},
      {"wrong datatype", [](ModelInferRequest& r) { r.mutable_inputs(0)->set_datatype("FP16"); }},
      {"unknown output", [](ModelInferRequest& r) { RequestOutputs(r, {"logits", "embeddings"}); }},
      {"priority 1 of 1 level",
       [](ModelInferRequest& r) { (*r.mutable_parameters())["priority"].set_int64_param(1); }},
      {"negative priority",
       [](ModelInferRequest& r) { (*r.mutable_parameters())["priority"].set_int64_param(-1); }},
  };
  ModelInferRequest valid = TensorInferRequest(one, true);
  ASSERT_EQ(InferCode(valid), grpc::StatusCode::OK);
  for (const auto& [name, mutate] : cases) {
    ModelInferRequest request = valid;
    mutate(request);
    EXPECT_EQ(InferCode(request), grpc::StatusCode::INVALID_ARGUMENT) << name;
  }
}

TEST_F(ServerTest, PriorityMustBeBelowTheConfiguredLevels) {
  ServerSetup setup = OnlyA();
  setup.batching.priority_levels = 2;
  ASSERT_NO_FATAL_FAILURE(Start(setup));
  ModelInferRequest request = TensorInferRequest(RandomImages(1, 13), true);
  (*request.mutable_parameters())["priority"].set_int64_param(1);
  EXPECT_EQ(InferCode(request), grpc::StatusCode::OK);
  (*request.mutable_parameters())["priority"].set_int64_param(2);
  EXPECT_EQ(InferCode(request), grpc::StatusCode::INVALID_ARGUMENT);
  ClassifyRequest classify = TensorClassifyRequest(RandomImages(1, 13), {1, 28, 28});
  classify.set_priority(1);
  ClassifyResponse response;
  EXPECT_TRUE(Classify(classify, &response).ok());
  classify.set_priority(2);
  EXPECT_EQ(Classify(classify, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, BatchLargerThanMaxBatchSizeIsInvalidArgument) {
  ASSERT_NO_FATAL_FAILURE(Start(OnlyA()));  // max_batch_size 4
  EXPECT_EQ(InferCode(TensorInferRequest(RandomImages(4, 14), true)), grpc::StatusCode::OK);
  EXPECT_EQ(InferCode(TensorInferRequest(RandomImages(5, 14), true)),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(InferCode(ImageInferRequest(std::vector<std::string>(4, EncodePng(3)), true)),
            grpc::StatusCode::OK);
  EXPECT_EQ(InferCode(ImageInferRequest(std::vector<std::string>(5, EncodePng(3)), true)),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, BadImageFailsItsOwnRequestOnly) {
  ServerSetup setup = OnlyA();
  setup.batching.max_queue_delay_us = 20'000;  // the two requests may share a batch
  ASSERT_NO_FATAL_FAILURE(Start(setup));
  const std::string good = EncodePng(4);
  std::unique_ptr<AsyncInfer> calls = InferCalls();
  ModelInferRequest bad_batch = ImageInferRequest({good, kGarbage}, true);
  bad_batch.set_model_version("a");
  ModelInferRequest good_request = ImageInferRequest({good}, true);
  good_request.set_model_version("a");
  calls->Start(bad_batch);
  calls->Start(good_request);
  ASSERT_TRUE(calls->WaitAll());
  const grpc::Status& bad_status = calls->calls()[0]->status;
  EXPECT_EQ(bad_status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad_status.error_message().find("image 1"), std::string::npos)
      << bad_status.error_message();
  const auto& ok_call = *calls->calls()[1];
  ASSERT_TRUE(ok_call.status.ok()) << ok_call.status.error_message();
  ExpectLogitsNear(FloatOutput(ok_call.response, "logits"), Expected("a", PreprocessPng(good)));
}

// ---- Classify ----

TEST_F(ServerTest, ClassifyReturnsTopKClassesWithLabelsVariantAndTiming) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::string png = EncodePng(5);
  ClassifyRequest request = ImageClassifyRequest(png);
  request.set_top_k(3);
  request.set_request_id("mine-1");
  ClassifyResponse response;
  const grpc::Status status = Classify(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.request_id(), "mine-1");
  EXPECT_EQ(response.model(), kModel);
  ASSERT_TRUE(response.variant() == "a" || response.variant() == "b") << response.variant();
  EXPECT_EQ(response.routing_generation(), 1);
  EXPECT_FALSE(response.has_error());

  const std::vector<float> logits = Expected(response.variant(), PreprocessPng(png));
  ASSERT_EQ(response.classes_size(), 3);
  EXPECT_EQ(response.classes(0).index(), ArgMax(logits.data(), kClasses));
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double denominator = 0;
  for (float l : logits) denominator += std::exp(l - max_logit);
  for (int i = 0; i < response.classes_size(); ++i) {
    const v1::Class& c = response.classes(i);
    ASSERT_GE(c.index(), 0);
    ASSERT_LT(c.index(), kClasses);
    EXPECT_EQ(c.label(), kLabels[c.index()]);
    EXPECT_NEAR(c.probability(), std::exp(logits[c.index()] - max_logit) / denominator, 1e-5);
    if (i > 0) {
      EXPECT_GE(response.classes(i - 1).probability(), c.probability());
    }
  }
  const v1::Timing& timing = response.timing();
  EXPECT_GE(timing.queue_us(), 0);
  EXPECT_GE(timing.preprocess_us(), 0);
  EXPECT_GE(timing.compute_us(), 0);
  EXPECT_GE(timing.total_us(), timing.compute_us());
  EXPECT_GE(timing.total_us(), timing.preprocess_us());
}

TEST_F(ServerTest, ClassifyTopKIsClampedToTheClasses) {
  ASSERT_NO_FATAL_FAILURE(Start(OnlyA()));
  ClassifyRequest request = TensorClassifyRequest(RandomImages(1, 15), {1, 1, 28, 28});
  request.set_top_k(50);
  ClassifyResponse response;
  ASSERT_TRUE(Classify(request, &response).ok());
  ASSERT_EQ(response.classes_size(), kClasses);
  std::set<int32_t> indices;
  double sum = 0;
  for (const v1::Class& c : response.classes()) {
    indices.insert(c.index());
    sum += c.probability();
  }
  EXPECT_EQ(indices.size(), static_cast<size_t>(kClasses));
  EXPECT_NEAR(sum, 1.0, 1e-5);
  request.set_top_k(0);  // the default, 5
  ASSERT_TRUE(Classify(request, &response).ok());
  EXPECT_EQ(response.classes_size(), 5);
  request.set_top_k(-1);
  EXPECT_EQ(Classify(request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, ClassifyTensorHoldsExactlyOneImage) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::vector<float> image = RandomImages(1, 16);
  const std::vector<float> logits = Expected("b", image);
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{1, 1, 28, 28}, {1, 28, 28}}) {
    ClassifyRequest request = TensorClassifyRequest(image, shape);
    request.set_variant("b");
    ClassifyResponse response;
    const grpc::Status status = Classify(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.variant(), "b");
    ASSERT_GT(response.classes_size(), 0);
    EXPECT_EQ(response.classes(0).index(), ArgMax(logits.data(), kClasses));
  }
  ClassifyResponse response;
  EXPECT_EQ(Classify(TensorClassifyRequest(RandomImages(2, 16), {2, 1, 28, 28}), &response)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Classify(TensorClassifyRequest(RandomImages(3, 16), {1, 3, 28, 28}), &response)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Classify(TensorClassifyRequest(image, {1, 1, 28, 27}), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  ClassifyRequest no_input;
  no_input.set_model(kModel);
  EXPECT_EQ(Classify(no_input, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, ClassifyStreamAnswersEveryRequestOnceById) {
  ASSERT_NO_FATAL_FAILURE(Start(OnlyA()));
  constexpr int kRequests = 20;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  auto stream = classifier_->ClassifyStream(&context);
  std::map<std::string, int64_t> expected_class;  // request id → top-1; -1: must fail
  for (int i = 0; i < kRequests; ++i) {
    const std::string id = absl::StrCat("s", i);
    const std::vector<float> image = RandomImages(1, 100 + i);
    ClassifyRequest request;
    switch (i % 5) {
      case 3: request = ImageClassifyRequest(kGarbage); break;
      case 4: request = TensorClassifyRequest(image, {1, 28, 27}); break;
      default: request = TensorClassifyRequest(image, {1, 28, 28}); break;
    }
    request.set_variant("a");
    request.set_request_id(id);
    const std::vector<float> logits = Expected("a", image);
    expected_class[id] = i % 5 >= 3 ? -1 : ArgMax(logits.data(), kClasses);
    ASSERT_TRUE(stream->Write(request)) << "write " << i;
  }
  ASSERT_TRUE(stream->WritesDone());
  std::map<std::string, int> answers;
  ClassifyResponse response;
  while (stream->Read(&response)) {
    const std::string& id = response.request_id();
    ++answers[id];
    ASSERT_TRUE(expected_class.count(id)) << "unknown id " << id;
    if (expected_class[id] < 0) {
      EXPECT_EQ(response.error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT)) << id;
      EXPECT_FALSE(response.error().message().empty()) << id;
      EXPECT_EQ(response.classes_size(), 0) << id;
    } else {
      EXPECT_FALSE(response.has_error()) << id << ": " << response.error().message();
      EXPECT_EQ(response.variant(), "a");
      ASSERT_GT(response.classes_size(), 0) << id;
      EXPECT_EQ(response.classes(0).index(), expected_class[id]) << id;
    }
  }
  const grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(answers.size(), static_cast<size_t>(kRequests));
  for (const auto& [id, count] : answers) EXPECT_EQ(count, 1) << id;
  const std::string metrics = Metrics();
  const auto stream_requests = [&](const char* code) {
    return SampleSum(metrics, "vitq_requests_total",
                     {"api=\"classify_stream\"", absl::StrCat("code=\"", code, "\""),
                      "model=\"tiny\"", "variant=\"a\""});
  };
  EXPECT_EQ(stream_requests("OK"), 12);
  EXPECT_EQ(stream_requests("INVALID_ARGUMENT"), 8);
}

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
  for (int i = 0; i < kCalls; ++i) calls->Start(TensorClassifyRequest(RandomImages(1, i), {1, 28, 28}));
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
  EXPECT_EQ(Classify(TensorClassifyRequest(RandomImages(1, 20), {1, 28, 28}), &response)
                .error_code(),
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
    return SampleSum(metrics, "vitq_requests_total",
                     {absl::StrCat("api=\"", api, "\""), absl::StrCat("code=\"", code, "\""),
                      absl::StrCat("model=\"", model, "\""),
                      absl::StrCat("variant=\"", variant, "\"")});
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
  EXPECT_EQ(SampleSum(metrics, "vitq_queue_duration_seconds_count",
                      {"model=\"tiny\"", "variant=\"a\""}),
            1);
  for (const char* variant : {"variant=\"a\"", "variant=\"b\""}) {
    EXPECT_EQ(SampleSum(metrics, "vitq_variant_info",
                        {"model=\"tiny\"", variant, "precision=\"fp32\"", "arch=\"deit\""}),
              1)
        << variant;
  }
}

}  // namespace
}  // namespace vitq::server
