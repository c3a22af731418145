#include "server/inference_service.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/grpc_util.h"
#include "server/output.h"

namespace vitq::server {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using ParameterMap = google::protobuf::Map<std::string, InferParameter>;

constexpr char kImageInput[] = "image";
constexpr char kTensorInput[] = "input";
constexpr char kLogits[] = "logits";
constexpr char kProbabilities[] = "probabilities";
constexpr char kLabels[] = "labels";

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

// A string parameter; INVALID_ARGUMENT when present with another type.
absl::Status StringParameter(const ParameterMap& params, const std::string& key, std::string& out) {
  auto it = params.find(key);
  if (it == params.end()) return absl::OkStatus();
  if (it->second.parameter_choice_case() != InferParameter::kStringParam) {
    return absl::InvalidArgumentError(absl::StrCat("parameter '", key, "' must be a string"));
  }
  out = it->second.string_param();
  return absl::OkStatus();
}

// The "label" parameter: class names or indexes as a string ("3", "Dress", "3,Dress"), or one
// class index as an integer.
absl::Status LabelParameter(const ParameterMap& params, std::string& out) {
  auto it = params.find("label");
  if (it == params.end()) return absl::OkStatus();
  switch (it->second.parameter_choice_case()) {
    case InferParameter::kStringParam:
      out = it->second.string_param();
      return absl::OkStatus();
    case InferParameter::kInt64Param:
      out = absl::StrCat(it->second.int64_param());
      return absl::OkStatus();
    case InferParameter::kUint64Param:
      out = absl::StrCat(it->second.uint64_param());
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          "parameter 'label' must be a string (class names or indexes, comma-separated) or an "
          "integer");
  }
}

// An integer parameter (int64, uint64, or a double with an integral value).
absl::Status IntParameter(const ParameterMap& params, const std::string& key, int64_t& out) {
  auto it = params.find(key);
  if (it == params.end()) return absl::OkStatus();
  const InferParameter& p = it->second;
  switch (p.parameter_choice_case()) {
    case InferParameter::kInt64Param:
      out = p.int64_param();
      return absl::OkStatus();
    case InferParameter::kUint64Param:
      if (p.uint64_param() <= static_cast<uint64_t>(INT64_MAX)) {
        out = static_cast<int64_t>(p.uint64_param());
        return absl::OkStatus();
      }
      break;
    case InferParameter::kDoubleParam:
      if (std::trunc(p.double_param()) == p.double_param() && std::abs(p.double_param()) < 9e15) {
        out = static_cast<int64_t>(p.double_param());
        return absl::OkStatus();
      }
      break;
    default:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("parameter '", key, "' must be an integer"));
}

// Splits raw BYTES tensor data: each element is a 4-byte little-endian length and the bytes.
absl::Status SplitRawBytes(const std::string& raw, std::vector<std::span<const uint8_t>>& out) {
  size_t pos = 0;
  while (pos < raw.size()) {
    if (raw.size() - pos < 4) return absl::InvalidArgumentError("raw BYTES input is truncated");
    uint32_t length = 0;
    for (int b = 0; b < 4; ++b)
      length |= static_cast<uint32_t>(static_cast<uint8_t>(raw[pos + b])) << (8 * b);
    pos += 4;
    if (length > raw.size() - pos) {
      return absl::InvalidArgumentError("raw BYTES input: element length runs past the data");
    }
    out.emplace_back(reinterpret_cast<const uint8_t*>(raw.data() + pos), length);
    pos += length;
  }
  return absl::OkStatus();
}

absl::Status ParseImageInput(const ModelInferRequest::InferInputTensor& in, const std::string* raw,
                             FrontendRequest& r) {
  if (in.datatype() != "BYTES") {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'image' must be BYTES (encoded image files), got ", in.datatype()));
  }
  const auto& shape = in.shape();
  if (shape.empty() || shape.size() > 2 || (shape.size() == 2 && shape[1] != 1)) {
    return absl::InvalidArgumentError("input 'image' must have shape [N] or [N, 1]");
  }
  if (raw) {
    if (absl::Status s = SplitRawBytes(*raw, r.encoded_images); !s.ok()) return s;
  } else {
    for (const std::string& bytes : in.contents().bytes_contents()) {
      r.encoded_images.emplace_back(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    }
  }
  if (static_cast<int64_t>(r.encoded_images.size()) != shape[0] || shape[0] < 1) {
    return absl::InvalidArgumentError(absl::StrCat("input 'image' has shape [", shape[0],
                                                   "] but holds ", r.encoded_images.size(),
                                                   " element(s)"));
  }
  return absl::OkStatus();
}

absl::Status ParseTensorInput(const ModelInferRequest::InferInputTensor& in, const std::string* raw,
                              FrontendRequest& r) {
  if (in.datatype() != "FP32") {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'input' must be FP32 [N, C, H, W], got ", in.datatype()));
  }
  r.tensor_shape.assign(in.shape().begin(), in.shape().end());
  if (r.tensor_shape.size() != 4) {
    return absl::InvalidArgumentError("input 'input' must have shape [N, C, H, W]");
  }
  if (raw) {
    if (raw->size() % sizeof(float) != 0) {
      return absl::InvalidArgumentError("raw FP32 input: byte count is not a multiple of 4");
    }
    r.tensor.resize(raw->size() / sizeof(float));
    std::memcpy(r.tensor.data(), raw->data(), raw->size());  // little-endian host
  } else {
    r.tensor.assign(in.contents().fp32_contents().begin(), in.contents().fp32_contents().end());
  }
  return absl::OkStatus();
}

absl::Status ParseInputs(const ModelInferRequest& req, FrontendRequest& r) {
  if (req.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected exactly one input, 'image' (BYTES) or 'input' (FP32), got ", req.inputs_size()));
  }
  const bool use_raw = req.raw_input_contents_size() > 0;
  if (use_raw && req.raw_input_contents_size() != req.inputs_size()) {
    return absl::InvalidArgumentError("raw_input_contents must hold one entry per input");
  }
  const auto& in = req.inputs(0);
  if (use_raw && in.has_contents()) {
    return absl::InvalidArgumentError(
        "an input may not set contents when raw_input_contents is used");
  }
  const std::string* raw = use_raw ? &req.raw_input_contents(0) : nullptr;
  if (in.name() == kImageInput) return ParseImageInput(in, raw, r);
  if (in.name() == kTensorInput) return ParseTensorInput(in, raw, r);
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown input '", in.name(), "': the inputs are 'image' (BYTES) and 'input' (FP32)"));
}

struct RequestedOutputs {
  std::set<std::string> names;
  int64_t top_k = kDefaultTopK;
};

absl::Status ParseOutputs(const ModelInferRequest& req, RequestedOutputs& out) {
  if (absl::Status s = IntParameter(req.parameters(), "topk", out.top_k); !s.ok()) return s;
  for (const auto& o : req.outputs()) {
    if (o.name() != kLogits && o.name() != kProbabilities && o.name() != kLabels) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown output '", o.name(), "': the outputs are logits, probabilities and labels"));
    }
    out.names.insert(o.name());
    if (absl::Status s = IntParameter(o.parameters(), "classification", out.top_k); !s.ok())
      return s;
  }
  if (out.names.empty()) out.names.insert(kLogits);
  if (out.top_k < 1) return absl::InvalidArgumentError("topk must be >= 1");
  return absl::OkStatus();
}

absl::Status ParseRequest(grpc::CallbackServerContext* context, const ModelInferRequest& req,
                          FrontendRequest& r, RequestedOutputs& outputs) {
  r.api = Api::kKserve;
  r.model = req.model_name();
  r.variant = req.model_version();
  std::string variant_param;
  absl::Status s = StringParameter(req.parameters(), "variant", variant_param);
  if (!variant_param.empty()) {
    if (!r.variant.empty() && r.variant != variant_param) {
      return absl::InvalidArgumentError("model_version and parameter 'variant' disagree");
    }
    r.variant = variant_param;
  }
  s.Update(StringParameter(req.parameters(), "ab_key", r.routing_key));
  s.Update(LabelParameter(req.parameters(), r.labels));
  int64_t timeout_us = 0, priority = 0;
  s.Update(IntParameter(req.parameters(), "timeout", timeout_us));
  s.Update(IntParameter(req.parameters(), "timeout_us", timeout_us));
  s.Update(IntParameter(req.parameters(), "priority", priority));
  if (!s.ok()) return s;
  r.timeout_us = timeout_us;
  r.priority = static_cast<int>(std::clamp<int64_t>(priority, -1, INT32_MAX));
  if (r.routing_key.empty()) r.routing_key = RoutingKeyFromMetadata(*context);
  r.grpc_deadline = context->deadline();
  r.is_cancelled = [context] { return context->IsCancelled(); };
  if (absl::Status in = ParseInputs(req, r); !in.ok()) return in;
  return ParseOutputs(req, outputs);
}

void AddRawOutput(ModelInferResponse& resp, const std::string& name, const std::string& datatype,
                  std::vector<int64_t> shape, std::string bytes) {
  auto* out = resp.add_outputs();
  out->set_name(name);
  out->set_datatype(datatype);
  for (int64_t d : shape) out->add_shape(d);
  *resp.add_raw_output_contents() = std::move(bytes);
}

std::string FloatBytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

void AppendRawString(std::string& raw, const std::string& s) {
  const uint32_t length = static_cast<uint32_t>(s.size());
  for (int b = 0; b < 4; ++b) raw.push_back(static_cast<char>((length >> (8 * b)) & 0xff));
  raw += s;
}

void FillResponse(const ModelInferRequest& req, const std::string& request_id,
                  const RequestedOutputs& requested, const FrontendResult& result,
                  ModelInferResponse& resp) {
  const Variant& variant = *result.variant;
  const int64_t n = result.num_images, classes = variant.num_classes();
  resp.set_model_name(req.model_name());
  resp.set_model_version(variant.name());
  resp.set_id(request_id);
  auto& params = *resp.mutable_parameters();
  params["variant"].set_string_param(variant.name());
  params["routing_generation"].set_int64_param(result.routing_generation);
  params["queue_us"].set_int64_param(result.output.queue_us);
  params["compute_us"].set_int64_param(result.output.compute_us);
  params["preprocess_us"].set_int64_param(result.preprocess_us);
  const std::vector<float>& logits = result.output.logits;
  if (requested.names.count(kLogits))
    AddRawOutput(resp, kLogits, "FP32", {n, classes}, FloatBytes(logits));
  const bool needs_probabilities =
      requested.names.count(kProbabilities) || requested.names.count(kLabels);
  const std::vector<float> probabilities =
      needs_probabilities ? Softmax(logits, classes) : std::vector<float>();
  if (requested.names.count(kProbabilities)) {
    AddRawOutput(resp, kProbabilities, "FP32", {n, classes}, FloatBytes(probabilities));
  }
  if (requested.names.count(kLabels)) {
    const int64_t k = std::min<int64_t>(requested.top_k, classes);
    std::string raw;
    for (int64_t i = 0; i < n; ++i) {
      for (const TopClass& c : TopK(probabilities.data() + i * classes, classes, k)) {
        AppendRawString(raw, ClassName(variant, c.index));
      }
    }
    AddRawOutput(resp, kLabels, "BYTES", {n, k}, std::move(raw));
  }
}

}  // namespace

grpc::ServerUnaryReactor* InferenceService::ServerLive(grpc::CallbackServerContext* context,
                                                       const inference::ServerLiveRequest*,
                                                       inference::ServerLiveResponse* response) {
  response->set_live(true);
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::ServerReady(grpc::CallbackServerContext* context,
                                                        const inference::ServerReadyRequest*,
                                                        inference::ServerReadyResponse* response) {
  response->set_ready(!frontend_->draining());
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::ModelReady(grpc::CallbackServerContext* context,
                                                       const inference::ModelReadyRequest* request,
                                                       inference::ModelReadyResponse* response) {
  // An unknown model or version is "not ready" rather than an error, as Triton answers.
  const bool known = frontend_->repository().Route(request->name(), request->version(), "").ok();
  response->set_ready(known && !frontend_->draining());
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name("vitq");
  response->set_version(VITQ_VERSION);
  response->add_extensions("model_repository");
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  absl::StatusOr<Routed> routed =
      frontend_->repository().Route(request->name(), request->version(), "");
  if (!routed.ok()) return FinishNow(context, ToGrpcStatus(routed.status()));
  const Variant& v = *routed->variant;
  const ModelConfig& c = v.model_config();
  response->set_name(request->name());
  for (const auto& e : routed->table->entries()) {
    response->add_versions(e.variant->name());
  }
  response->set_platform(absl::StrCat("vitq_", ArchName(c.arch)));
  auto add = [](auto* list, const std::string& name, const std::string& type,
                std::vector<int64_t> shape) {
    auto* t = list->Add();
    t->set_name(name);
    t->set_datatype(type);
    for (int64_t d : shape) t->add_shape(d);
  };
  add(response->mutable_inputs(), kImageInput, "BYTES", {-1});
  add(response->mutable_inputs(), kTensorInput, "FP32", {-1, c.in_chans, c.img_size, c.img_size});
  add(response->mutable_outputs(), kLogits, "FP32", {-1, c.num_classes});
  add(response->mutable_outputs(), kProbabilities, "FP32", {-1, c.num_classes});
  add(response->mutable_outputs(), kLabels, "BYTES", {-1, -1});
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::RepositoryIndex(
    grpc::CallbackServerContext* context, const inference::RepositoryIndexRequest*,
    inference::RepositoryIndexResponse* response) {
  for (const auto& model : frontend_->repository().models()) {
    for (const auto& e : model->routing()->entries()) {
      auto* entry = response->add_models();
      entry->set_name(model->name());
      entry->set_version(e.variant->name());
      entry->set_state(frontend_->draining() ? "UNAVAILABLE" : "READY");
    }
  }
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceService::ModelInfer(grpc::CallbackServerContext* context,
                                                       const ModelInferRequest* request,
                                                       ModelInferResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  FrontendRequest r;
  auto requested = std::make_shared<RequestedOutputs>();
  if (absl::Status s = ParseRequest(context, *request, r, *requested); !s.ok()) {
    // Counted like every other request; the frontend is bypassed only for parsing errors.
    frontend_->CountRejected(r, s);
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  // The response's id: the request's, or one the server assigns (for Classifier.Feedback).
  std::string request_id = request->id().empty() ? NewRequestId() : request->id();
  r.request_id = request_id;
  frontend_->Infer(std::move(r), [reactor, request, response, requested, request_id](
                                     absl::Status status, FrontendResult result) {
    if (status.ok()) {
      try {
        FillResponse(*request, request_id, *requested, result, *response);
      } catch (const std::exception& e) {  // bad_alloc: answer anyway, never leave the call open
        response->Clear();
        status =
            absl::ResourceExhaustedError(absl::StrCat("building the response failed: ", e.what()));
      }
    }
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

}  // namespace vitq::server
