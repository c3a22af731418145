// What vitq-client sends and what it reads back, for both APIs, as plain functions on protos:
//
//   classify API  vitq.v1.Classifier/Classify          image bytes or a float tensor in,
//                                                       top-k classes + variant + timing out
//   kserve API    inference.GRPCInferenceService/ModelInfer
//                   image:  input "image", BYTES, shape [1], contents.bytes_contents
//                   tensor: input "input", FP32, shape [1, C, H, W], raw_input_contents
//                   request parameter "topk" (int64); outputs asked: "labels", "probabilities"
//                   reply:  "labels" BYTES [1, k] (already most probable first),
//                           "probabilities" FP32 [1, num_classes] (typed or raw contents)
//
// No I/O here besides reading files, so the encoding can be tested without a server.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/grpc_service.pb.h"
#include "vitq/v1/classifier.pb.h"

namespace vitq::client {

enum class Api { kClassify, kKServe };

// "classify" or "kserve".
absl::StatusOr<Api> ParseApi(absl::string_view name);

// The input of one request: an encoded image file, or an already preprocessed tensor.
struct Payload {
  std::string name;            // file path, or "tensor" (for messages)
  std::string image_bytes;     // encoded JPEG/PNG/BMP/WebP; empty for a tensor
  std::vector<int64_t> shape;  // (C, H, W) of a tensor; empty for an image
  std::vector<float> data;     // (C, H, W) row-major
};

// The file at `path` as an image payload. NOT_FOUND when unreadable.
absl::StatusOr<Payload> ReadImagePayload(const std::string& path);

// A (C, H, W) tensor of standard-normal values (what normalized pixels look like) from a fixed
// seed, so that runs are repeatable. INVALID_ARGUMENT unless `shape` is 3 positive dimensions
// of at most 1 GiB of floats in total.
absl::StatusOr<Payload> RandomTensorPayload(const std::vector<int64_t>& shape);

// Request fields that do not depend on the payload.
struct RequestOptions {
  std::string model;    // required
  std::string variant;  // empty: the server's router chooses (kserve: model_version)
  int32_t top_k = 5;    // classes to return
  std::string label;    // the true class (index or name) for labeled accuracy; empty: unknown
};

vitq::v1::ClassifyRequest MakeClassifyRequest(const Payload& payload,
                                              const RequestOptions& options);
inference::ModelInferRequest MakeModelInferRequest(const Payload& payload,
                                                   const RequestOptions& options);

// One predicted class.
struct Prediction {
  int64_t index = 0;  // class index in the model's output
  std::string label;  // may be empty
  float probability = 0;
};

std::vector<Prediction> PredictionsOf(const vitq::v1::ClassifyResponse& response);

// The `top_k` most probable classes of a ModelInfer reply: probabilities sorted descending give
// the class indices; "labels" (optional) names them in the same order. INTERNAL when the reply
// lacks "probabilities" or its contents do not match its shape.
absl::StatusOr<std::vector<Prediction>> PredictionsOf(const inference::ModelInferResponse& response,
                                                      int32_t top_k);

}  // namespace vitq::client
