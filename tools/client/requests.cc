#include "tools/client/requests.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <numeric>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/client/connection.h"

namespace vitq::client {

// Raw tensor contents are little-endian on the wire; we copy them with memcpy.
static_assert(std::endian::native == std::endian::little,
              "raw_input_contents/raw_output_contents handling assumes a little-endian host");

namespace {

constexpr int64_t kMaxTensorElements = int64_t{1} << 28;  // 1 GiB of floats
constexpr uint32_t kTensorSeed = 20240601;                // any fixed value: repeatable runs

using inference::ModelInferRequest;
using inference::ModelInferResponse;

int64_t ElementCount(const google::protobuf::RepeatedField<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>());
}

// Index of the output called `name` in `response`, or -1.
int FindOutput(const ModelInferResponse& response, std::string_view name) {
  for (int i = 0; i < response.outputs_size(); ++i) {
    if (response.outputs(i).name() == name) return i;
  }
  return -1;
}

absl::StatusOr<std::vector<float>> Fp32Values(const ModelInferResponse& response, int output) {
  const ModelInferResponse::InferOutputTensor& tensor = response.outputs(output);
  if (tensor.datatype() != "FP32") {
    return absl::InternalError(
        absl::StrCat("output '", tensor.name(), "' is ", tensor.datatype(), ", expected FP32"));
  }
  std::vector<float> values;
  if (response.raw_output_contents_size() > output) {
    const std::string& raw = response.raw_output_contents(output);
    if (raw.size() % sizeof(float) != 0) {
      return absl::InternalError(absl::StrCat("raw contents of '", tensor.name(), "' are ",
                                              raw.size(), " bytes, not a multiple of 4"));
    }
    values.resize(raw.size() / sizeof(float));
    std::memcpy(values.data(), raw.data(), raw.size());
  } else {
    values.assign(tensor.contents().fp32_contents().begin(),
                  tensor.contents().fp32_contents().end());
  }
  if (tensor.shape_size() > 0 &&
      ElementCount(tensor.shape()) != static_cast<int64_t>(values.size())) {
    return absl::InternalError(absl::StrCat("output '", tensor.name(), "' has shape [",
                                            absl::StrJoin(tensor.shape(), ","), "] but ",
                                            values.size(), " values"));
  }
  return values;
}

// BYTES raw contents: each element is a 4-byte little-endian length, then that many bytes.
absl::StatusOr<std::vector<std::string>> SplitRawBytes(const std::string& raw) {
  std::vector<std::string> elements;
  size_t pos = 0;
  while (pos < raw.size()) {
    uint32_t length = 0;
    if (raw.size() - pos < sizeof(length)) return absl::InternalError("truncated BYTES element");
    std::memcpy(&length, raw.data() + pos, sizeof(length));
    pos += sizeof(length);
    if (raw.size() - pos < length) return absl::InternalError("truncated BYTES element");
    elements.push_back(raw.substr(pos, length));
    pos += length;
  }
  return elements;
}

absl::StatusOr<std::vector<std::string>> BytesValues(const ModelInferResponse& response,
                                                     int output) {
  const ModelInferResponse::InferOutputTensor& tensor = response.outputs(output);
  if (tensor.datatype() != "BYTES") {
    return absl::InternalError(
        absl::StrCat("output '", tensor.name(), "' is ", tensor.datatype(), ", expected BYTES"));
  }
  if (response.raw_output_contents_size() > output) {
    return SplitRawBytes(response.raw_output_contents(output));
  }
  return std::vector<std::string>(tensor.contents().bytes_contents().begin(),
                                  tensor.contents().bytes_contents().end());
}

// Class indices of the `k` largest probabilities, largest first (ties: lower index first, as
// the server orders them).
std::vector<int64_t> TopIndices(const std::vector<float>& probabilities, size_t k) {
  std::vector<int64_t> order(probabilities.size());
  std::iota(order.begin(), order.end(), 0);
  k = std::min(k, order.size());
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    return probabilities[a] > probabilities[b] || (probabilities[a] == probabilities[b] && a < b);
  });
  order.resize(k);
  return order;
}

void AddImageInput(const Payload& payload, ModelInferRequest* request) {
  ModelInferRequest::InferInputTensor* input = request->add_inputs();
  input->set_name("image");
  input->set_datatype("BYTES");
  input->add_shape(1);
  input->mutable_contents()->add_bytes_contents(payload.image_bytes);
}

void AddTensorInput(const Payload& payload, ModelInferRequest* request) {
  ModelInferRequest::InferInputTensor* input = request->add_inputs();
  input->set_name("input");
  input->set_datatype("FP32");
  input->add_shape(1);  // (1, C, H, W)
  for (int64_t dim : payload.shape) input->add_shape(dim);
  request->add_raw_input_contents()->assign(reinterpret_cast<const char*>(payload.data.data()),
                                            payload.data.size() * sizeof(float));
}

}  // namespace

absl::StatusOr<Api> ParseApi(absl::string_view name) {
  if (name == "classify") return Api::kClassify;
  if (name == "kserve") return Api::kKServe;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown API '", name, "' (expected classify or kserve)"));
}

absl::StatusOr<Payload> ReadImagePayload(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status();
  if (bytes->empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": file is empty"));
  Payload payload;
  payload.name = path;
  payload.image_bytes = *std::move(bytes);
  return payload;
}

absl::StatusOr<Payload> RandomTensorPayload(const std::vector<int64_t>& shape) {
  const bool positive = std::all_of(shape.begin(), shape.end(), [](int64_t d) { return d > 0; });
  if (shape.size() != 3 || !positive) {
    return absl::InvalidArgumentError(absl::StrCat("tensor shape [", absl::StrJoin(shape, ","),
                                                   "] must be three positive sizes C,H,W"));
  }
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (dim > kMaxTensorElements / count) {
      return absl::InvalidArgumentError(absl::StrCat("tensor shape [", absl::StrJoin(shape, ","),
                                                     "] exceeds ", kMaxTensorElements, " floats"));
    }
    count *= dim;
  }
  Payload payload;
  payload.name = "tensor";
  payload.shape = shape;
  payload.data.resize(count);
  std::mt19937 rng(kTensorSeed);
  std::normal_distribution<float> normal;
  for (float& value : payload.data) value = normal(rng);
  return payload;
}

vitq::v1::ClassifyRequest MakeClassifyRequest(const Payload& payload,
                                              const RequestOptions& options) {
  vitq::v1::ClassifyRequest request;
  request.set_model(options.model);
  request.set_variant(options.variant);
  request.set_top_k(options.top_k);
  request.set_label(options.label);
  if (payload.shape.empty()) {
    request.set_image(payload.image_bytes);
  } else {
    vitq::v1::Tensor* tensor = request.mutable_tensor();
    tensor->mutable_shape()->Add(payload.shape.begin(), payload.shape.end());  // (C, H, W)
    tensor->mutable_data()->Add(payload.data.begin(), payload.data.end());
  }
  return request;
}

inference::ModelInferRequest MakeModelInferRequest(const Payload& payload,
                                                   const RequestOptions& options) {
  ModelInferRequest request;
  request.set_model_name(options.model);
  request.set_model_version(options.variant);
  (*request.mutable_parameters())["topk"].set_int64_param(options.top_k);
  if (!options.label.empty())
    (*request.mutable_parameters())["label"].set_string_param(options.label);
  if (payload.shape.empty()) {
    AddImageInput(payload, &request);
  } else {
    AddTensorInput(payload, &request);
  }
  request.add_outputs()->set_name("labels");
  request.add_outputs()->set_name("probabilities");
  return request;
}

std::vector<Prediction> PredictionsOf(const vitq::v1::ClassifyResponse& response) {
  std::vector<Prediction> predictions;
  for (const vitq::v1::Class& c : response.classes()) {
    predictions.push_back({c.index(), c.label(), c.probability()});
  }
  return predictions;
}

absl::StatusOr<std::vector<Prediction>> PredictionsOf(const ModelInferResponse& response,
                                                      int32_t top_k) {
  const int probabilities_output = FindOutput(response, "probabilities");
  if (probabilities_output < 0) {
    return absl::InternalError("the reply has no output 'probabilities'");
  }
  absl::StatusOr<std::vector<float>> probabilities = Fp32Values(response, probabilities_output);
  if (!probabilities.ok()) return probabilities.status();
  std::vector<std::string> labels;  // stays empty when the model has no label names
  if (const int labels_output = FindOutput(response, "labels"); labels_output >= 0) {
    absl::StatusOr<std::vector<std::string>> values = BytesValues(response, labels_output);
    if (!values.ok()) return values.status();
    labels = *std::move(values);
  }
  std::vector<Prediction> predictions;
  for (int64_t index : TopIndices(*probabilities, static_cast<size_t>(std::max(top_k, 0)))) {
    const size_t rank = predictions.size();
    predictions.push_back(
        {index, rank < labels.size() ? labels[rank] : std::string(), (*probabilities)[index]});
  }
  return predictions;
}

}  // namespace vitq::client
