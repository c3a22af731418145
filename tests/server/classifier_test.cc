// End-to-end tests of the vitq.v1.Classifier API of VitqServer over a loopback port: Classify
// (top-k classes with labels, probabilities and timing; tensor and image inputs) and
// ClassifyStream (every request answered once, by id). The fixture and helpers are in
// server_test_util.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

#include "tests/server/server_test_util.h"

namespace vitq::server::testing {
namespace {

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

// More requests than a stream may have in flight (64): the server pauses reading and resumes as
// answers are written, and every request is still answered exactly once.
TEST_F(ServerTest, ClassifyStreamBeyondItsInFlightLimitAnswersEverything) {
  ASSERT_NO_FATAL_FAILURE(Start(OnlyA()));
  constexpr int kRequests = 300;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  auto stream = classifier_->ClassifyStream(&context);
  std::map<std::string, int> answers;
  int errors = 0;
  std::thread reader([&] {
    ClassifyResponse response;
    while (stream->Read(&response)) {
      ++answers[response.request_id()];
      errors += response.has_error();
    }
  });
  const std::vector<float> image = RandomImages(1, 7);
  for (int i = 0; i < kRequests; ++i) {
    ClassifyRequest request = TensorClassifyRequest(image, {1, 28, 28});
    request.set_request_id(absl::StrCat("r", i));
    if (!stream->Write(request)) break;
  }
  stream->WritesDone();
  reader.join();
  const grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(answers.size(), static_cast<size_t>(kRequests));
  EXPECT_EQ(errors, 0);
  for (const auto& [id, count] : answers) EXPECT_EQ(count, 1) << id;
}

}  // namespace
}  // namespace vitq::server::testing
