// End-to-end tests of the KServe v2 API (inference.GRPCInferenceService) of VitqServer over a
// loopback port: tensors and encoded images in, logits, probabilities and labels out; variant
// selection; model metadata and readiness; the errors a malformed request gets. The fixture and
// helpers are in server_test_util.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "tests/server/server_test_util.h"

namespace vitq::server::testing {
namespace {

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

}  // namespace
}  // namespace vitq::server::testing
