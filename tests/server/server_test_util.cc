// Definitions of the fixture and helpers declared in server_test_util.h.
#include "tests/server/server_test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <sstream>
#include <string_view>
#include <tuple>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "absl/strings/str_cat.h"
#include "preprocessing/image.h"
#include "server/model_io.h"

namespace vitq::server::testing {

// ---- Models and servers ----

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

ModelConfig SlowConfig() {
  ModelConfig c = TinyConfig();
  c.patch_size = 1;
  c.embed_dim = 64;
  c.depth = 2;
  return c;
}

ServerSetup OnlyA() {
  ServerSetup setup;
  setup.serve_b = false;
  return setup;
}

std::vector<float> RandomImages(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> images(n * kImageElements);
  for (float& v : images) v = normal(rng);
  return images;
}

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

const std::string* RawOutput(const ModelInferResponse& response, const std::string& name,
                             std::vector<int64_t>* shape) {
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

// ---- The fixture ----

void ServerTest::Start(const ServerSetup& setup) {
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

std::unique_ptr<Model> ServerTest::NewModel(uint64_t seed) const {
  absl::StatusOr<std::unique_ptr<Model>> model =
      RandomModel(config_, seed, UniformPlan(Precision::kFp32));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

std::vector<float> ServerTest::Expected(const std::string& variant,
                                        const std::vector<float>& images) {
  const int64_t n = static_cast<int64_t>(images.size()) / kImageElements;
  Tensor input({n, 1, kImageSize, kImageSize});
  std::copy(images.begin(), images.end(), input.data());
  absl::StatusOr<Tensor> logits = references_.at(variant)->Forward(input);
  EXPECT_TRUE(logits.ok()) << logits.status();
  if (!logits.ok()) return {};
  return std::vector<float>(logits->data(), logits->data() + logits->numel());
}

grpc::Status ServerTest::Infer(const ModelInferRequest& request,
                               ModelInferResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  return kserve_->ModelInfer(&context, request, response);
}

grpc::Status ServerTest::Classify(const ClassifyRequest& request, ClassifyResponse* response,
                                  const std::string& ab_key_metadata) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  if (!ab_key_metadata.empty()) context.AddMetadata("x-vitq-ab-key", ab_key_metadata);
  return classifier_->Classify(&context, request, response);
}

grpc::StatusCode ServerTest::InferCode(const ModelInferRequest& request) {
  ModelInferResponse response;
  return Infer(request, &response).error_code();
}

std::unique_ptr<AsyncClassify> ServerTest::ClassifyCalls() {
  return std::make_unique<AsyncClassify>([this](auto* context, auto* request, auto* response,
                                                auto done) {
    classifier_->async()->Classify(context, request, response, std::move(done));
  });
}

std::unique_ptr<AsyncInfer> ServerTest::InferCalls() {
  return std::make_unique<AsyncInfer>([this](auto* context, auto* request, auto* response,
                                             auto done) {
    kserve_->async()->ModelInfer(context, request, response, std::move(done));
  });
}

HealthCheckResponse::ServingStatus ServerTest::HealthOf(const std::string& service,
                                                        grpc::Status* status) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  *status = health_->Check(&context, request, &response);
  return response.status();
}

std::string ServerTest::Metrics() { return HttpGetMetrics(server_->metrics_port()); }

std::shared_ptr<Variant> ServerTest::VariantNamed(const std::string& name) {
  return server_->repository().Find(kModel)->routing()->Find(name);
}

}  // namespace vitq::server::testing
