// Tests of the generated protocol code (vitq_proto):
//  * real in-process gRPC round trips (server on 127.0.0.1, port picked by the OS, generated stubs
//    over an insecure channel) for inference.GRPCInferenceService and vitq.v1.Classifier;
//  * wire compatibility with KServe/Triton clients: encoded tag bytes, hand-encoded requests as a
//    foreign client would send them, and a table of every field number, so that a renumbering,
//    a retyping or a renamed rpc cannot slip in unnoticed.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "inference/grpc_service.grpc.pb.h"
#include "vitq/v1/classifier.grpc.pb.h"

namespace vitq::proto_test {
namespace {

using inference::GRPCInferenceService;
using inference::InferParameter;
using inference::InferTensorContents;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

// ---------------------------------------------------------------------------------------------
// Test services

// Echoes every input back as an output of the same name, datatype, shape and raw bytes, and
// copies the request's id and parameters. ServerReady and the rest stay unimplemented.
class EchoInferenceService final : public GRPCInferenceService::Service {
 public:
  grpc::Status ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse* response) override {
    response->set_live(true);
    return grpc::Status::OK;
  }

  grpc::Status ModelInfer(grpc::ServerContext*, const ModelInferRequest* request,
                          ModelInferResponse* response) override {
    if (request->model_name().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "model_name is required");
    }
    response->set_model_name(request->model_name());
    response->set_model_version(request->model_version().empty() ? "1" : request->model_version());
    response->set_id(request->id());
    *response->mutable_parameters() = request->parameters();
    for (const auto& input : request->inputs()) {
      auto* output = response->add_outputs();
      output->set_name(input.name());
      output->set_datatype(input.datatype());
      *output->mutable_shape() = input.shape();
      *output->mutable_parameters() = input.parameters();
      if (input.has_contents()) *output->mutable_contents() = input.contents();
    }
    *response->mutable_raw_output_contents() = request->raw_input_contents();
    return grpc::Status::OK;
  }
};

// Fake classification: the "class index" is the input's size (image bytes or tensor elements),
// the probability is the tensor's sum (0 for images); the label is the model name.
grpc::Status FakeClassify(const vitq::v1::ClassifyRequest& request,
                          vitq::v1::ClassifyResponse* response) {
  response->set_request_id(request.request_id());
  response->set_model(request.model());
  response->set_variant(request.variant().empty() ? "routed:" + request.routing_key()
                                                  : request.variant());
  auto* cls = response->add_classes();
  cls->set_label(request.model());
  switch (request.input_case()) {
    case vitq::v1::ClassifyRequest::kImage:
      cls->set_index(static_cast<int32_t>(request.image().size()));
      break;
    case vitq::v1::ClassifyRequest::kTensor: {
      int64_t count = 1;
      for (int64_t d : request.tensor().shape()) count *= d;
      float sum = 0;
      for (float v : request.tensor().data()) sum += v;
      cls->set_index(static_cast<int32_t>(count));
      cls->set_probability(sum);
      break;
    }
    case vitq::v1::ClassifyRequest::INPUT_NOT_SET:
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no input");
  }
  auto* timing = response->mutable_timing();
  timing->set_queue_us(request.priority());
  timing->set_preprocess_us(request.top_k());
  timing->set_compute_us(3);
  timing->set_total_us(request.timeout_us());
  response->set_routing_generation(7);
  return grpc::Status::OK;
}

class FakeClassifierService final : public vitq::v1::Classifier::Service {
 public:
  grpc::Status Classify(grpc::ServerContext*, const vitq::v1::ClassifyRequest* request,
                        vitq::v1::ClassifyResponse* response) override {
    return FakeClassify(*request, response);
  }

  // Answers each request in turn; a bad request gets a response with `error` set and the stream
  // goes on.
  grpc::Status ClassifyStream(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<vitq::v1::ClassifyResponse, vitq::v1::ClassifyRequest>* stream)
      override {
    vitq::v1::ClassifyRequest request;
    while (stream->Read(&request)) {
      vitq::v1::ClassifyResponse response;
      grpc::Status status = FakeClassify(request, &response);
      if (!status.ok()) {
        response.Clear();
        response.set_request_id(request.request_id());
        response.mutable_error()->set_code(status.error_code());
        response.mutable_error()->set_message(status.error_message());
      }
      if (!stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }
};

// ---------------------------------------------------------------------------------------------
// Fixture: one server with both services, one channel, stubs.

class GrpcRoundTripTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&inference_service_);
    builder.RegisterService(&classifier_service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr) << "server failed to start";
    ASSERT_GT(port_, 0) << "no port was selected";
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                   grpc::InsecureChannelCredentials());
    inference_ = GRPCInferenceService::NewStub(channel_);
    classifier_ = vitq::v1::Classifier::NewStub(channel_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  // Every call gets a generous deadline so that a bug fails the test instead of hanging it.
  static void SetDeadline(grpc::ClientContext* context) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  }

  EchoInferenceService inference_service_;
  FakeClassifierService classifier_service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<GRPCInferenceService::Stub> inference_;
  std::unique_ptr<vitq::v1::Classifier::Stub> classifier_;
};

std::string FloatBytes(const std::vector<float>& values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

TEST_F(GrpcRoundTripTest, ServerLive) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ServerLiveResponse response;
  grpc::Status status = inference_->ServerLive(&context, {}, &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  EXPECT_TRUE(response.live());
}

TEST_F(GrpcRoundTripTest, UnimplementedRpcAnswersUnimplemented) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ServerReadyResponse response;
  grpc::Status status = inference_->ServerReady(&context, {}, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(GrpcRoundTripTest, ModelInferEchoesTensorsParametersAndRawBytes) {
  ModelInferRequest request;
  request.set_model_name("deit_tiny");
  request.set_model_version("3");
  request.set_id("req-42");
  (*request.mutable_parameters())["flag"].set_bool_param(true);
  (*request.mutable_parameters())["timeout"].set_int64_param(-1234567890123LL);
  (*request.mutable_parameters())["variant"].set_string_param("w4a8");
  (*request.mutable_parameters())["scale"].set_double_param(0.125);
  (*request.mutable_parameters())["big"].set_uint64_param(UINT64_MAX);

  auto* image = request.add_inputs();
  image->set_name("pixel_values");
  image->set_datatype("FP32");
  for (int64_t d : {1, 3, 2, 2}) image->add_shape(d);
  (*image->mutable_parameters())["layout"].set_string_param("NCHW");
  std::vector<float> pixels(12);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = 0.5f * static_cast<float>(i) - 2.0f;
  request.add_raw_input_contents(FloatBytes(pixels));

  auto* encoded = request.add_inputs();
  encoded->set_name("image_bytes");
  encoded->set_datatype("BYTES");
  encoded->add_shape(1);
  // BYTES elements in raw form: 4-byte little-endian length, then the bytes (with a NUL inside).
  const std::string payload("\xff\xd8\x00\x01jpeg", 8);
  std::string raw_bytes("\x08\x00\x00\x00", 4);
  raw_bytes += payload;
  request.add_raw_input_contents(raw_bytes);

  auto* requested = request.add_outputs();
  requested->set_name("logits");
  (*requested->mutable_parameters())["classification"].set_int64_param(5);

  grpc::ClientContext context;
  SetDeadline(&context);
  ModelInferResponse response;
  grpc::Status status = inference_->ModelInfer(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();

  EXPECT_EQ(response.model_name(), "deit_tiny");
  EXPECT_EQ(response.model_version(), "3");
  EXPECT_EQ(response.id(), "req-42");

  const auto& params = response.parameters();
  ASSERT_EQ(params.size(), 5u);
  EXPECT_EQ(params.at("flag").parameter_choice_case(), InferParameter::kBoolParam);
  EXPECT_TRUE(params.at("flag").bool_param());
  EXPECT_EQ(params.at("timeout").parameter_choice_case(), InferParameter::kInt64Param);
  EXPECT_EQ(params.at("timeout").int64_param(), -1234567890123LL);
  EXPECT_EQ(params.at("variant").parameter_choice_case(), InferParameter::kStringParam);
  EXPECT_EQ(params.at("variant").string_param(), "w4a8");
  EXPECT_EQ(params.at("scale").parameter_choice_case(), InferParameter::kDoubleParam);
  EXPECT_EQ(params.at("scale").double_param(), 0.125);
  EXPECT_EQ(params.at("big").parameter_choice_case(), InferParameter::kUint64Param);
  EXPECT_EQ(params.at("big").uint64_param(), UINT64_MAX);

  ASSERT_EQ(response.outputs_size(), 2);
  const auto& out0 = response.outputs(0);
  EXPECT_EQ(out0.name(), "pixel_values");
  EXPECT_EQ(out0.datatype(), "FP32");
  EXPECT_EQ(std::vector<int64_t>(out0.shape().begin(), out0.shape().end()),
            (std::vector<int64_t>{1, 3, 2, 2}));
  EXPECT_EQ(out0.parameters().at("layout").string_param(), "NCHW");
  EXPECT_FALSE(out0.has_contents());
  const auto& out1 = response.outputs(1);
  EXPECT_EQ(out1.name(), "image_bytes");
  EXPECT_EQ(out1.datatype(), "BYTES");
  EXPECT_EQ(std::vector<int64_t>(out1.shape().begin(), out1.shape().end()),
            (std::vector<int64_t>{1}));

  ASSERT_EQ(response.raw_output_contents_size(), 2);
  EXPECT_EQ(response.raw_output_contents(0), FloatBytes(pixels));
  std::vector<float> back(12);
  ASSERT_EQ(response.raw_output_contents(0).size(), back.size() * sizeof(float));
  std::memcpy(back.data(), response.raw_output_contents(0).data(), back.size() * sizeof(float));
  EXPECT_EQ(back, pixels);
  EXPECT_EQ(response.raw_output_contents(1), raw_bytes);  // embedded NUL survives
}

TEST_F(GrpcRoundTripTest, ModelInferTypedContentsSurvive) {
  ModelInferRequest request;
  request.set_model_name("swin_tiny");
  auto* input = request.add_inputs();
  input->set_name("x");
  input->set_datatype("FP32");
  input->add_shape(3);
  for (float v : {1.5f, -2.25f, 3.0e-8f}) input->mutable_contents()->add_fp32_contents(v);
  input->mutable_contents()->add_int64_contents(-7);  // only to show all lists travel
  input->mutable_contents()->add_bytes_contents(std::string("a\0b", 3));

  grpc::ClientContext context;
  SetDeadline(&context);
  ModelInferResponse response;
  grpc::Status status = inference_->ModelInfer(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.outputs_size(), 1);
  ASSERT_TRUE(response.outputs(0).has_contents());
  const InferTensorContents& contents = response.outputs(0).contents();
  ASSERT_EQ(contents.fp32_contents_size(), 3);
  EXPECT_EQ(contents.fp32_contents(0), 1.5f);
  EXPECT_EQ(contents.fp32_contents(1), -2.25f);
  EXPECT_EQ(contents.fp32_contents(2), 3.0e-8f);
  ASSERT_EQ(contents.int64_contents_size(), 1);
  EXPECT_EQ(contents.int64_contents(0), -7);
  ASSERT_EQ(contents.bytes_contents_size(), 1);
  EXPECT_EQ(contents.bytes_contents(0), std::string("a\0b", 3));
  EXPECT_EQ(response.raw_output_contents_size(), 0);
}

TEST_F(GrpcRoundTripTest, ServerErrorStatusReachesClient) {
  grpc::ClientContext context;
  SetDeadline(&context);
  ModelInferResponse response;
  grpc::Status status = inference_->ModelInfer(&context, ModelInferRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "model_name is required");
}

TEST_F(GrpcRoundTripTest, ClassifyImageAndTensor) {
  {
    vitq::v1::ClassifyRequest request;
    request.set_model("deit_tiny");
    request.set_image(std::string("\x89PNG\r\n\x1a\n\0\0", 10));
    request.set_top_k(3);
    request.set_timeout_us(250000);
    request.set_priority(1);
    request.set_request_id("img-1");
    request.set_routing_key("user-9");
    grpc::ClientContext context;
    SetDeadline(&context);
    vitq::v1::ClassifyResponse response;
    grpc::Status status = classifier_->Classify(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.request_id(), "img-1");
    EXPECT_EQ(response.model(), "deit_tiny");
    EXPECT_EQ(response.variant(), "routed:user-9");
    ASSERT_EQ(response.classes_size(), 1);
    EXPECT_EQ(response.classes(0).index(), 10);  // all 10 bytes arrived, NULs included
    EXPECT_EQ(response.classes(0).label(), "deit_tiny");
    EXPECT_EQ(response.timing().queue_us(), 1);
    EXPECT_EQ(response.timing().preprocess_us(), 3);
    EXPECT_EQ(response.timing().compute_us(), 3);
    EXPECT_EQ(response.timing().total_us(), 250000);
    EXPECT_EQ(response.routing_generation(), 7);
    EXPECT_FALSE(response.has_error());
  }
  {
    vitq::v1::ClassifyRequest request;
    request.set_model("swin_tiny");
    request.set_variant("int8");
    auto* tensor = request.mutable_tensor();
    for (int64_t d : {3, 4, 4}) tensor->add_shape(d);
    for (int i = 0; i < 48; ++i) tensor->add_data(0.25f);
    grpc::ClientContext context;
    SetDeadline(&context);
    vitq::v1::ClassifyResponse response;
    grpc::Status status = classifier_->Classify(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.variant(), "int8");
    ASSERT_EQ(response.classes_size(), 1);
    EXPECT_EQ(response.classes(0).index(), 48);
    EXPECT_FLOAT_EQ(response.classes(0).probability(), 12.0f);
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    vitq::v1::ClassifyResponse response;
    grpc::Status status = classifier_->Classify(&context, vitq::v1::ClassifyRequest(), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(GrpcRoundTripTest, ClassifyStreamAnswersEveryRequestAndReportsPerRequestErrors) {
  grpc::ClientContext context;
  SetDeadline(&context);
  auto stream = classifier_->ClassifyStream(&context);
  ASSERT_NE(stream, nullptr);
  for (int i = 0; i < 3; ++i) {
    vitq::v1::ClassifyRequest request;
    request.set_model("deit_tiny");
    request.set_request_id("s" + std::to_string(i));
    if (i != 1) request.set_image(std::string(static_cast<size_t>(100 + i), 'x'));  // #1: no input
    ASSERT_TRUE(stream->Write(request));
  }
  ASSERT_TRUE(stream->WritesDone());
  std::map<std::string, vitq::v1::ClassifyResponse> by_id;
  vitq::v1::ClassifyResponse response;
  while (stream->Read(&response)) by_id[response.request_id()] = response;
  grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(by_id.size(), 3u);
  EXPECT_EQ(by_id["s0"].classes(0).index(), 100);
  EXPECT_EQ(by_id["s2"].classes(0).index(), 102);
  EXPECT_FALSE(by_id["s0"].has_error());
  ASSERT_TRUE(by_id["s1"].has_error());
  EXPECT_EQ(by_id["s1"].error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(by_id["s1"].error().message(), "no input");
  EXPECT_EQ(by_id["s1"].classes_size(), 0);
}

// ---------------------------------------------------------------------------------------------
// Wire compatibility

// A protobuf tag byte for field numbers < 16: (number << 3) | wire_type.
constexpr uint8_t kVarint = 0, kFixed64 = 1, kLengthDelimited = 2;
constexpr uint8_t Tag(int number, uint8_t wire_type) {
  return static_cast<uint8_t>((number << 3) | wire_type);
}

template <typename Message>
uint8_t FirstByte(const Message& message) {
  std::string bytes;
  EXPECT_TRUE(message.SerializeToString(&bytes));
  EXPECT_FALSE(bytes.empty());
  return bytes.empty() ? 0 : static_cast<uint8_t>(bytes[0]);
}

TEST(WireFormatTest, ModelInferRequestTagBytes) {
  ModelInferRequest r;
  r.set_model_name("m");
  EXPECT_EQ(FirstByte(r), 0x0A);  // field 1, length-delimited
  r.Clear();
  r.set_model_version("1");
  EXPECT_EQ(FirstByte(r), 0x12);
  r.Clear();
  r.set_id("i");
  EXPECT_EQ(FirstByte(r), 0x1A);
  r.Clear();
  (*r.mutable_parameters())["k"].set_bool_param(true);
  EXPECT_EQ(FirstByte(r), 0x22);
  r.Clear();
  r.add_inputs()->set_name("x");
  EXPECT_EQ(FirstByte(r), 0x2A);
  r.Clear();
  r.add_outputs()->set_name("y");
  EXPECT_EQ(FirstByte(r), 0x32);
  r.Clear();
  r.add_raw_input_contents("\x01\x02");
  EXPECT_EQ(FirstByte(r), 0x3A);  // field 7, length-delimited

  // Byte-exact encoding of a small request.
  r.Clear();
  r.set_model_name("m");
  r.add_raw_input_contents(std::string("\x01\x00", 2));
  std::string bytes;
  ASSERT_TRUE(r.SerializeToString(&bytes));
  EXPECT_EQ(bytes, std::string("\x0A\x01m\x3A\x02\x01\x00", 7));
}

TEST(WireFormatTest, InferInputTensorAndResponseTagBytes) {
  ModelInferRequest::InferInputTensor t;
  t.set_name("x");
  EXPECT_EQ(FirstByte(t), Tag(1, kLengthDelimited));
  t.Clear();
  t.set_datatype("FP32");
  EXPECT_EQ(FirstByte(t), Tag(2, kLengthDelimited));
  t.Clear();
  t.add_shape(3);
  EXPECT_EQ(FirstByte(t), Tag(3, kLengthDelimited));  // packed repeated int64
  t.Clear();
  (*t.mutable_parameters())["k"].set_int64_param(1);
  EXPECT_EQ(FirstByte(t), Tag(4, kLengthDelimited));
  t.Clear();
  t.mutable_contents()->add_fp32_contents(1.0f);
  EXPECT_EQ(FirstByte(t), Tag(5, kLengthDelimited));

  ModelInferRequest::InferRequestedOutputTensor o;
  (*o.mutable_parameters())["classification"].set_int64_param(5);
  EXPECT_EQ(FirstByte(o), Tag(2, kLengthDelimited));

  ModelInferResponse resp;
  resp.add_outputs()->set_name("logits");
  EXPECT_EQ(FirstByte(resp), Tag(5, kLengthDelimited));
  resp.Clear();
  resp.add_raw_output_contents("abc");
  EXPECT_EQ(FirstByte(resp), 0x32);  // raw_output_contents is field 6
}

TEST(WireFormatTest, InferParameterOneofTagBytes) {
  InferParameter p;
  p.set_bool_param(true);
  std::string bytes;
  ASSERT_TRUE(p.SerializeToString(&bytes));
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
  p.set_int64_param(1000);
  ASSERT_TRUE(p.SerializeToString(&bytes));
  EXPECT_EQ(bytes, std::string("\x10\xE8\x07", 3));
  p.set_string_param("x");
  ASSERT_TRUE(p.SerializeToString(&bytes));
  EXPECT_EQ(bytes, std::string("\x1A\x01x", 3));
  p.set_double_param(1.5);
  EXPECT_EQ(FirstByte(p), Tag(4, kFixed64));
  p.set_uint64_param(7);
  ASSERT_TRUE(p.SerializeToString(&bytes));
  EXPECT_EQ(bytes, std::string("\x28\x07", 2));
}

TEST(WireFormatTest, InferTensorContentsTagBytes) {
  InferTensorContents c;
  c.add_bool_contents(true);
  EXPECT_EQ(FirstByte(c), Tag(1, kLengthDelimited));  // packed
  c.Clear();
  c.add_int_contents(-1);
  EXPECT_EQ(FirstByte(c), Tag(2, kLengthDelimited));
  c.Clear();
  c.add_int64_contents(-1);
  EXPECT_EQ(FirstByte(c), Tag(3, kLengthDelimited));
  c.Clear();
  c.add_uint_contents(1);
  EXPECT_EQ(FirstByte(c), Tag(4, kLengthDelimited));
  c.Clear();
  c.add_uint64_contents(1);
  EXPECT_EQ(FirstByte(c), Tag(5, kLengthDelimited));
  c.Clear();
  c.add_fp32_contents(1.0f);
  std::string bytes;
  ASSERT_TRUE(c.SerializeToString(&bytes));
  EXPECT_EQ(bytes, std::string("\x32\x04\x00\x00\x80\x3F", 6));  // packed float 1.0, LE
  c.Clear();
  c.add_fp64_contents(1.0);
  EXPECT_EQ(FirstByte(c), Tag(7, kLengthDelimited));
  c.Clear();
  c.add_bytes_contents("b");
  EXPECT_EQ(FirstByte(c), Tag(8, kLengthDelimited));
}

// Bytes written by hand exactly as a KServe/Triton client encodes a request; they must parse
// into the fields the protocol means.
TEST(WireFormatTest, ParsesHandEncodedForeignRequest) {
  std::string wire;
  wire += std::string(
      "\x0A\x04"
      "deit",
      6);  // model_name = "deit"
  wire += std::string(
      "\x1A\x02"
      "r1",
      4);                              // id = "r1"
  wire += std::string("\x22\x0E", 2);  // parameters entry (14 bytes)
  wire += std::string(
      "\x0A\x07"
      "timeout",
      9);                                          //   key = "timeout"
  wire += std::string("\x12\x03\x10\xE8\x07", 5);  //   value.int64_param = 1000
  wire += std::string("\x2A\x11", 2);              // inputs[0] (17 bytes)
  wire += std::string(
      "\x0A\x05"
      "input",
      7);  //   name = "input"
  wire += std::string(
      "\x12\x04"
      "FP32",
      6);                                      //   datatype = "FP32"
  wire += std::string("\x1A\x02\x01\x03", 4);  //   shape = [1, 3] (packed)
  wire += std::string("\x3A\x0C", 2);          // raw_input_contents[0], 12 bytes
  wire += FloatBytes({1.0f, 2.0f, -0.5f});

  ModelInferRequest r;
  ASSERT_TRUE(r.ParseFromString(wire));
  EXPECT_EQ(r.model_name(), "deit");
  EXPECT_EQ(r.id(), "r1");
  ASSERT_EQ(r.parameters().count("timeout"), 1u);
  EXPECT_EQ(r.parameters().at("timeout").int64_param(), 1000);
  ASSERT_EQ(r.inputs_size(), 1);
  EXPECT_EQ(r.inputs(0).name(), "input");
  EXPECT_EQ(r.inputs(0).datatype(), "FP32");
  EXPECT_EQ(std::vector<int64_t>(r.inputs(0).shape().begin(), r.inputs(0).shape().end()),
            (std::vector<int64_t>{1, 3}));
  ASSERT_EQ(r.raw_input_contents_size(), 1);
  EXPECT_EQ(r.raw_input_contents(0), FloatBytes({1.0f, 2.0f, -0.5f}));
  // Nothing was left over as an unknown field (which a wrong number would produce).
  EXPECT_TRUE(r.GetReflection()->GetUnknownFields(r).empty());
  EXPECT_TRUE(r.inputs(0).GetReflection()->GetUnknownFields(r.inputs(0)).empty());
}

// ---------------------------------------------------------------------------------------------
// Complete tables of names, numbers and types, read from the generated descriptors.

struct FieldSpec {
  const char* message;  // full message name
  const char* field;
  int number;
  google::protobuf::FieldDescriptor::Type type;
  bool repeated;
};

void ExpectFields(const std::vector<FieldSpec>& specs) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  std::map<std::string, int> listed;  // message -> number of fields in the table
  for (const FieldSpec& s : specs) {
    SCOPED_TRACE(std::string(s.message) + "." + s.field);
    const auto* message = pool->FindMessageTypeByName(s.message);
    ASSERT_NE(message, nullptr) << "missing message";
    ++listed[s.message];
    const auto* field = message->FindFieldByName(s.field);
    ASSERT_NE(field, nullptr) << "missing field";
    EXPECT_EQ(field->number(), s.number);
    EXPECT_EQ(field->type(), s.type) << field->type_name();
    EXPECT_EQ(field->is_repeated(), s.repeated);
  }
  // No message has fields the table does not know about.
  for (const auto& [name, count] : listed) {
    EXPECT_EQ(pool->FindMessageTypeByName(name)->field_count(), count) << name;
  }
}

using FT = google::protobuf::FieldDescriptor;

TEST(DescriptorTest, InferenceFieldNumbers) {
  ExpectFields({
      {"inference.ServerLiveResponse", "live", 1, FT::TYPE_BOOL, false},
      {"inference.ServerReadyResponse", "ready", 1, FT::TYPE_BOOL, false},
      {"inference.ModelReadyRequest", "name", 1, FT::TYPE_STRING, false},
      {"inference.ModelReadyRequest", "version", 2, FT::TYPE_STRING, false},
      {"inference.ModelReadyResponse", "ready", 1, FT::TYPE_BOOL, false},
      {"inference.ServerMetadataResponse", "name", 1, FT::TYPE_STRING, false},
      {"inference.ServerMetadataResponse", "version", 2, FT::TYPE_STRING, false},
      {"inference.ServerMetadataResponse", "extensions", 3, FT::TYPE_STRING, true},
      {"inference.ModelMetadataRequest", "name", 1, FT::TYPE_STRING, false},
      {"inference.ModelMetadataRequest", "version", 2, FT::TYPE_STRING, false},
      {"inference.ModelMetadataResponse.TensorMetadata", "name", 1, FT::TYPE_STRING, false},
      {"inference.ModelMetadataResponse.TensorMetadata", "datatype", 2, FT::TYPE_STRING, false},
      {"inference.ModelMetadataResponse.TensorMetadata", "shape", 3, FT::TYPE_INT64, true},
      {"inference.ModelMetadataResponse", "name", 1, FT::TYPE_STRING, false},
      {"inference.ModelMetadataResponse", "versions", 2, FT::TYPE_STRING, true},
      {"inference.ModelMetadataResponse", "platform", 3, FT::TYPE_STRING, false},
      {"inference.ModelMetadataResponse", "inputs", 4, FT::TYPE_MESSAGE, true},
      {"inference.ModelMetadataResponse", "outputs", 5, FT::TYPE_MESSAGE, true},
      {"inference.InferParameter", "bool_param", 1, FT::TYPE_BOOL, false},
      {"inference.InferParameter", "int64_param", 2, FT::TYPE_INT64, false},
      {"inference.InferParameter", "string_param", 3, FT::TYPE_STRING, false},
      {"inference.InferParameter", "double_param", 4, FT::TYPE_DOUBLE, false},
      {"inference.InferParameter", "uint64_param", 5, FT::TYPE_UINT64, false},
      {"inference.InferTensorContents", "bool_contents", 1, FT::TYPE_BOOL, true},
      {"inference.InferTensorContents", "int_contents", 2, FT::TYPE_INT32, true},
      {"inference.InferTensorContents", "int64_contents", 3, FT::TYPE_INT64, true},
      {"inference.InferTensorContents", "uint_contents", 4, FT::TYPE_UINT32, true},
      {"inference.InferTensorContents", "uint64_contents", 5, FT::TYPE_UINT64, true},
      {"inference.InferTensorContents", "fp32_contents", 6, FT::TYPE_FLOAT, true},
      {"inference.InferTensorContents", "fp64_contents", 7, FT::TYPE_DOUBLE, true},
      {"inference.InferTensorContents", "bytes_contents", 8, FT::TYPE_BYTES, true},
      {"inference.ModelInferRequest.InferInputTensor", "name", 1, FT::TYPE_STRING, false},
      {"inference.ModelInferRequest.InferInputTensor", "datatype", 2, FT::TYPE_STRING, false},
      {"inference.ModelInferRequest.InferInputTensor", "shape", 3, FT::TYPE_INT64, true},
      {"inference.ModelInferRequest.InferInputTensor", "parameters", 4, FT::TYPE_MESSAGE, true},
      {"inference.ModelInferRequest.InferInputTensor", "contents", 5, FT::TYPE_MESSAGE, false},
      {"inference.ModelInferRequest.InferRequestedOutputTensor", "name", 1, FT::TYPE_STRING, false},
      {"inference.ModelInferRequest.InferRequestedOutputTensor", "parameters", 2, FT::TYPE_MESSAGE,
       true},
      {"inference.ModelInferRequest", "model_name", 1, FT::TYPE_STRING, false},
      {"inference.ModelInferRequest", "model_version", 2, FT::TYPE_STRING, false},
      {"inference.ModelInferRequest", "id", 3, FT::TYPE_STRING, false},
      {"inference.ModelInferRequest", "parameters", 4, FT::TYPE_MESSAGE, true},
      {"inference.ModelInferRequest", "inputs", 5, FT::TYPE_MESSAGE, true},
      {"inference.ModelInferRequest", "outputs", 6, FT::TYPE_MESSAGE, true},
      {"inference.ModelInferRequest", "raw_input_contents", 7, FT::TYPE_BYTES, true},
      {"inference.ModelInferResponse.InferOutputTensor", "name", 1, FT::TYPE_STRING, false},
      {"inference.ModelInferResponse.InferOutputTensor", "datatype", 2, FT::TYPE_STRING, false},
      {"inference.ModelInferResponse.InferOutputTensor", "shape", 3, FT::TYPE_INT64, true},
      {"inference.ModelInferResponse.InferOutputTensor", "parameters", 4, FT::TYPE_MESSAGE, true},
      {"inference.ModelInferResponse.InferOutputTensor", "contents", 5, FT::TYPE_MESSAGE, false},
      {"inference.ModelInferResponse", "model_name", 1, FT::TYPE_STRING, false},
      {"inference.ModelInferResponse", "model_version", 2, FT::TYPE_STRING, false},
      {"inference.ModelInferResponse", "id", 3, FT::TYPE_STRING, false},
      {"inference.ModelInferResponse", "parameters", 4, FT::TYPE_MESSAGE, true},
      {"inference.ModelInferResponse", "outputs", 5, FT::TYPE_MESSAGE, true},
      {"inference.ModelInferResponse", "raw_output_contents", 6, FT::TYPE_BYTES, true},
      {"inference.ModelRepositoryParameter", "bool_param", 1, FT::TYPE_BOOL, false},
      {"inference.ModelRepositoryParameter", "int64_param", 2, FT::TYPE_INT64, false},
      {"inference.ModelRepositoryParameter", "string_param", 3, FT::TYPE_STRING, false},
      {"inference.ModelRepositoryParameter", "bytes_param", 4, FT::TYPE_BYTES, false},
      {"inference.RepositoryIndexRequest", "repository_name", 1, FT::TYPE_STRING, false},
      {"inference.RepositoryIndexRequest", "ready", 2, FT::TYPE_BOOL, false},
      {"inference.RepositoryIndexResponse.ModelIndex", "name", 1, FT::TYPE_STRING, false},
      {"inference.RepositoryIndexResponse.ModelIndex", "version", 2, FT::TYPE_STRING, false},
      {"inference.RepositoryIndexResponse.ModelIndex", "state", 3, FT::TYPE_STRING, false},
      {"inference.RepositoryIndexResponse.ModelIndex", "reason", 4, FT::TYPE_STRING, false},
      {"inference.RepositoryIndexResponse", "models", 1, FT::TYPE_MESSAGE, true},
      {"inference.RepositoryModelLoadRequest", "repository_name", 1, FT::TYPE_STRING, false},
      {"inference.RepositoryModelLoadRequest", "model_name", 2, FT::TYPE_STRING, false},
      {"inference.RepositoryModelLoadRequest", "parameters", 3, FT::TYPE_MESSAGE, true},
      {"inference.RepositoryModelUnloadRequest", "repository_name", 1, FT::TYPE_STRING, false},
      {"inference.RepositoryModelUnloadRequest", "model_name", 2, FT::TYPE_STRING, false},
      {"inference.RepositoryModelUnloadRequest", "parameters", 3, FT::TYPE_MESSAGE, true},
  });
  // The five parameter kinds share one oneof, as in the protocol.
  const auto* p = InferParameter::descriptor();
  ASSERT_EQ(p->oneof_decl_count(), 1);
  EXPECT_EQ(p->oneof_decl(0)->name(), "parameter_choice");
  EXPECT_EQ(p->oneof_decl(0)->field_count(), 5);
  // Map value types.
  EXPECT_EQ(ModelInferRequest::descriptor()
                ->FindFieldByName("parameters")
                ->message_type()
                ->map_value()
                ->message_type(),
            p);
}

// The rpc path on the wire is "/<package>.<service>/<method>": these names are the contract.
TEST(DescriptorTest, InferenceServiceMethods) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  const auto* service = pool->FindServiceByName("inference.GRPCInferenceService");
  ASSERT_NE(service, nullptr);
  EXPECT_STREQ(GRPCInferenceService::service_full_name(), "inference.GRPCInferenceService");
  const std::vector<std::pair<std::string, std::pair<std::string, std::string>>> methods = {
      {"ServerLive", {"ServerLiveRequest", "ServerLiveResponse"}},
      {"ServerReady", {"ServerReadyRequest", "ServerReadyResponse"}},
      {"ModelReady", {"ModelReadyRequest", "ModelReadyResponse"}},
      {"ServerMetadata", {"ServerMetadataRequest", "ServerMetadataResponse"}},
      {"ModelMetadata", {"ModelMetadataRequest", "ModelMetadataResponse"}},
      {"ModelInfer", {"ModelInferRequest", "ModelInferResponse"}},
      {"RepositoryIndex", {"RepositoryIndexRequest", "RepositoryIndexResponse"}},
      {"RepositoryModelLoad", {"RepositoryModelLoadRequest", "RepositoryModelLoadResponse"}},
      {"RepositoryModelUnload", {"RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse"}},
  };
  EXPECT_EQ(service->method_count(), static_cast<int>(methods.size()));
  for (const auto& [name, types] : methods) {
    SCOPED_TRACE(name);
    const auto* m = service->FindMethodByName(name);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->input_type()->full_name(), "inference." + types.first);
    EXPECT_EQ(m->output_type()->full_name(), "inference." + types.second);
    EXPECT_FALSE(m->client_streaming());
    EXPECT_FALSE(m->server_streaming());
  }
}

TEST(DescriptorTest, VitqV1FieldNumbers) {
  ExpectFields({
      {"vitq.v1.Tensor", "shape", 1, FT::TYPE_INT64, true},
      {"vitq.v1.Tensor", "data", 2, FT::TYPE_FLOAT, true},
      {"vitq.v1.ClassifyRequest", "model", 1, FT::TYPE_STRING, false},
      {"vitq.v1.ClassifyRequest", "variant", 2, FT::TYPE_STRING, false},
      {"vitq.v1.ClassifyRequest", "image", 3, FT::TYPE_BYTES, false},
      {"vitq.v1.ClassifyRequest", "tensor", 4, FT::TYPE_MESSAGE, false},
      {"vitq.v1.ClassifyRequest", "top_k", 5, FT::TYPE_INT32, false},
      {"vitq.v1.ClassifyRequest", "timeout_us", 6, FT::TYPE_INT64, false},
      {"vitq.v1.ClassifyRequest", "priority", 7, FT::TYPE_INT32, false},
      {"vitq.v1.ClassifyRequest", "request_id", 8, FT::TYPE_STRING, false},
      {"vitq.v1.ClassifyRequest", "routing_key", 9, FT::TYPE_STRING, false},
      {"vitq.v1.Class", "index", 1, FT::TYPE_INT32, false},
      {"vitq.v1.Class", "label", 2, FT::TYPE_STRING, false},
      {"vitq.v1.Class", "probability", 3, FT::TYPE_FLOAT, false},
      {"vitq.v1.Timing", "queue_us", 1, FT::TYPE_INT64, false},
      {"vitq.v1.Timing", "preprocess_us", 2, FT::TYPE_INT64, false},
      {"vitq.v1.Timing", "compute_us", 3, FT::TYPE_INT64, false},
      {"vitq.v1.Timing", "total_us", 4, FT::TYPE_INT64, false},
      {"vitq.v1.Error", "code", 1, FT::TYPE_INT32, false},
      {"vitq.v1.Error", "message", 2, FT::TYPE_STRING, false},
      {"vitq.v1.ClassifyResponse", "request_id", 1, FT::TYPE_STRING, false},
      {"vitq.v1.ClassifyResponse", "model", 2, FT::TYPE_STRING, false},
      {"vitq.v1.ClassifyResponse", "variant", 3, FT::TYPE_STRING, false},
      {"vitq.v1.ClassifyResponse", "classes", 4, FT::TYPE_MESSAGE, true},
      {"vitq.v1.ClassifyResponse", "timing", 5, FT::TYPE_MESSAGE, false},
      {"vitq.v1.ClassifyResponse", "error", 6, FT::TYPE_MESSAGE, false},
      {"vitq.v1.ClassifyResponse", "routing_generation", 7, FT::TYPE_INT64, false},
      {"vitq.v1.GetRoutingRequest", "model", 1, FT::TYPE_STRING, false},
      {"vitq.v1.RoutingTable", "model", 1, FT::TYPE_STRING, false},
      {"vitq.v1.RoutingTable", "weights", 2, FT::TYPE_MESSAGE, true},
      {"vitq.v1.RoutingTable", "shadow_variant", 3, FT::TYPE_STRING, false},
      {"vitq.v1.RoutingTable", "shadow_fraction", 4, FT::TYPE_DOUBLE, false},
      {"vitq.v1.RoutingTable", "generation", 5, FT::TYPE_INT64, false},
      {"vitq.v1.RoutingTable", "updated_unix_us", 6, FT::TYPE_INT64, false},
      {"vitq.v1.SetRoutingRequest", "model", 1, FT::TYPE_STRING, false},
      {"vitq.v1.SetRoutingRequest", "weights", 2, FT::TYPE_MESSAGE, true},
      {"vitq.v1.SetRoutingRequest", "shadow_variant", 3, FT::TYPE_STRING, false},
      {"vitq.v1.SetRoutingRequest", "shadow_fraction", 4, FT::TYPE_DOUBLE, false},
      {"vitq.v1.SetRoutingRequest", "expected_generation", 5, FT::TYPE_INT64, false},
      {"vitq.v1.ListVariantsRequest", "model", 1, FT::TYPE_STRING, false},
      {"vitq.v1.ClassifyRequest", "label", 10, FT::TYPE_STRING, false},
      {"vitq.v1.FeedbackRequest", "request_id", 1, FT::TYPE_STRING, false},
      {"vitq.v1.FeedbackRequest", "label", 2, FT::TYPE_STRING, false},
      {"vitq.v1.FeedbackResponse", "model", 1, FT::TYPE_STRING, false},
      {"vitq.v1.FeedbackResponse", "variant", 2, FT::TYPE_STRING, false},
      {"vitq.v1.FeedbackResponse", "correct", 3, FT::TYPE_BOOL, false},
      {"vitq.v1.ModelInfo", "name", 1, FT::TYPE_STRING, false},
      {"vitq.v1.ModelInfo", "routing", 2, FT::TYPE_MESSAGE, false},
      {"vitq.v1.ModelInfo", "variants", 3, FT::TYPE_MESSAGE, true},
      {"vitq.v1.ListModelsResponse", "models", 1, FT::TYPE_MESSAGE, true},
      {"vitq.v1.LoadVariantRequest", "model", 1, FT::TYPE_STRING, false},
      {"vitq.v1.LoadVariantRequest", "variant", 2, FT::TYPE_STRING, false},
      {"vitq.v1.LoadVariantRequest", "path", 3, FT::TYPE_STRING, false},
      {"vitq.v1.LoadVariantRequest", "precision", 4, FT::TYPE_STRING, false},
      {"vitq.v1.LoadVariantRequest", "weight", 5, FT::TYPE_DOUBLE, false},
      {"vitq.v1.LoadVariantRequest", "replace", 6, FT::TYPE_BOOL, false},
      {"vitq.v1.UnloadVariantRequest", "model", 1, FT::TYPE_STRING, false},
      {"vitq.v1.UnloadVariantRequest", "variant", 2, FT::TYPE_STRING, false},
      {"vitq.v1.ReloadConfigResponse", "changes", 1, FT::TYPE_STRING, true},
      {"vitq.v1.StatsRequest", "model", 1, FT::TYPE_STRING, false},
      {"vitq.v1.StatsResponse", "model", 1, FT::TYPE_STRING, false},
      {"vitq.v1.StatsResponse", "reference_variant", 2, FT::TYPE_STRING, false},
      {"vitq.v1.StatsResponse", "variants", 3, FT::TYPE_MESSAGE, true},
      {"vitq.v1.VariantStats", "variant", 1, FT::TYPE_STRING, false},
      {"vitq.v1.VariantStats", "weight", 2, FT::TYPE_DOUBLE, false},
      {"vitq.v1.VariantStats", "requests", 3, FT::TYPE_INT64, false},
      {"vitq.v1.VariantStats", "errors", 4, FT::TYPE_INT64, false},
      {"vitq.v1.VariantStats", "p50_ms", 5, FT::TYPE_DOUBLE, false},
      {"vitq.v1.VariantStats", "p99_ms", 6, FT::TYPE_DOUBLE, false},
      {"vitq.v1.VariantStats", "throughput_rps", 7, FT::TYPE_DOUBLE, false},
      {"vitq.v1.VariantStats", "labeled", 8, FT::TYPE_INT64, false},
      {"vitq.v1.VariantStats", "labeled_correct", 9, FT::TYPE_INT64, false},
      {"vitq.v1.VariantStats", "shadow_compared", 10, FT::TYPE_INT64, false},
      {"vitq.v1.VariantStats", "shadow_agreed", 11, FT::TYPE_INT64, false},
      {"vitq.v1.VariantStats", "shadow_dropped", 12, FT::TYPE_INT64, false},
      {"vitq.v1.VariantStats", "shadow_mean_cosine", 13, FT::TYPE_DOUBLE, false},
      {"vitq.v1.VariantStats", "uptime_s", 14, FT::TYPE_DOUBLE, false},
      {"vitq.v1.VariantInfo", "model", 1, FT::TYPE_STRING, false},
      {"vitq.v1.VariantInfo", "variant", 2, FT::TYPE_STRING, false},
      {"vitq.v1.VariantInfo", "arch", 3, FT::TYPE_STRING, false},
      {"vitq.v1.VariantInfo", "precision", 4, FT::TYPE_STRING, false},
      {"vitq.v1.VariantInfo", "artifact", 5, FT::TYPE_STRING, false},
      {"vitq.v1.VariantInfo", "state", 6, FT::TYPE_ENUM, false},
      {"vitq.v1.VariantInfo", "reason", 7, FT::TYPE_STRING, false},
      {"vitq.v1.VariantInfo", "weight", 8, FT::TYPE_DOUBLE, false},
      {"vitq.v1.VariantInfo", "shadow", 9, FT::TYPE_BOOL, false},
      {"vitq.v1.VariantInfo", "top1_accuracy", 10, FT::TYPE_DOUBLE, false},
      {"vitq.v1.VariantInfo", "weight_bytes", 11, FT::TYPE_INT64, false},
      {"vitq.v1.ListVariantsResponse", "variants", 1, FT::TYPE_MESSAGE, true},
  });
  const auto* request = vitq::v1::ClassifyRequest::descriptor();
  ASSERT_EQ(request->real_oneof_decl_count(), 1);
  EXPECT_EQ(request->oneof_decl(0)->name(), "input");
  EXPECT_EQ(request->oneof_decl(0)->field_count(), 2);
  const auto* weights = vitq::v1::RoutingTable::descriptor()->FindFieldByName("weights");
  ASSERT_TRUE(weights->is_map());
  EXPECT_EQ(weights->message_type()->map_key()->type(), FT::TYPE_STRING);
  EXPECT_EQ(weights->message_type()->map_value()->type(), FT::TYPE_DOUBLE);
  EXPECT_TRUE(
      vitq::v1::VariantInfo::descriptor()->FindFieldByName("top1_accuracy")->has_presence());

  const auto* state = vitq::v1::VariantState_descriptor();
  const std::vector<std::pair<std::string, int>> values = {{"VARIANT_STATE_UNSPECIFIED", 0},
                                                           {"VARIANT_STATE_LOADING", 1},
                                                           {"VARIANT_STATE_READY", 2},
                                                           {"VARIANT_STATE_FAILED", 3},
                                                           {"VARIANT_STATE_DRAINING", 4}};
  EXPECT_EQ(state->value_count(), static_cast<int>(values.size()));
  for (const auto& [name, number] : values) {
    const auto* v = state->FindValueByName(name);
    ASSERT_NE(v, nullptr) << name;
    EXPECT_EQ(v->number(), number) << name;
  }
}

TEST(DescriptorTest, VitqV1ServiceMethods) {
  EXPECT_STREQ(vitq::v1::Classifier::service_full_name(), "vitq.v1.Classifier");
  EXPECT_STREQ(vitq::v1::Admin::service_full_name(), "vitq.v1.Admin");
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();

  const auto* classifier = pool->FindServiceByName("vitq.v1.Classifier");
  ASSERT_NE(classifier, nullptr);
  EXPECT_EQ(classifier->method_count(), 3);
  const auto* feedback = classifier->FindMethodByName("Feedback");
  ASSERT_NE(feedback, nullptr);
  EXPECT_EQ(feedback->input_type(), vitq::v1::FeedbackRequest::descriptor());
  const auto* unary = classifier->FindMethodByName("Classify");
  ASSERT_NE(unary, nullptr);
  EXPECT_FALSE(unary->client_streaming());
  EXPECT_FALSE(unary->server_streaming());
  const auto* stream = classifier->FindMethodByName("ClassifyStream");
  ASSERT_NE(stream, nullptr);
  EXPECT_TRUE(stream->client_streaming());
  EXPECT_TRUE(stream->server_streaming());
  EXPECT_EQ(stream->input_type(), vitq::v1::ClassifyRequest::descriptor());
  EXPECT_EQ(stream->output_type(), vitq::v1::ClassifyResponse::descriptor());

  const auto* admin = pool->FindServiceByName("vitq.v1.Admin");
  ASSERT_NE(admin, nullptr);
  EXPECT_EQ(admin->method_count(), 8);
  const std::vector<std::pair<std::string, std::pair<std::string, std::string>>> methods = {
      {"GetRouting", {"GetRoutingRequest", "RoutingTable"}},
      {"SetRouting", {"SetRoutingRequest", "RoutingTable"}},
      {"ListVariants", {"ListVariantsRequest", "ListVariantsResponse"}},
      {"ListModels", {"ListModelsRequest", "ListModelsResponse"}},
      {"LoadVariant", {"LoadVariantRequest", "VariantInfo"}},
      {"UnloadVariant", {"UnloadVariantRequest", "RoutingTable"}},
      {"ReloadConfig", {"ReloadConfigRequest", "ReloadConfigResponse"}},
      {"Stats", {"StatsRequest", "StatsResponse"}},
  };
  for (const auto& [name, types] : methods) {
    SCOPED_TRACE(name);
    const auto* m = admin->FindMethodByName(name);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->input_type()->full_name(), "vitq.v1." + types.first);
    EXPECT_EQ(m->output_type()->full_name(), "vitq.v1." + types.second);
  }
}

}  // namespace
}  // namespace vitq::proto_test
