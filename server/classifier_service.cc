#include "server/classifier_service.h"

#include <atomic>
#include <deque>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/grpc_util.h"
#include "server/output.h"

namespace vitq::server {
namespace {

using vitq::v1::ClassifyRequest;
using vitq::v1::ClassifyResponse;

// The protocol-independent request. `request` must outlive the Infer call (images point into it).
absl::Status ToFrontendRequest(const ClassifyRequest& request, FrontendRequest& r) {
  r.model = request.model();
  r.variant = request.variant();
  r.routing_key = request.routing_key();
  r.request_id = request.request_id();
  r.labels = request.label();
  r.timeout_us = request.timeout_us();
  r.priority = request.priority();
  if (request.top_k() < 0) return absl::InvalidArgumentError("top_k must be >= 0");
  switch (request.input_case()) {
    case ClassifyRequest::kImage:
      r.encoded_images.emplace_back(reinterpret_cast<const uint8_t*>(request.image().data()),
                                    request.image().size());
      return absl::OkStatus();
    case ClassifyRequest::kTensor:
      r.tensor.assign(request.tensor().data().begin(), request.tensor().data().end());
      r.tensor_shape.assign(request.tensor().shape().begin(), request.tensor().shape().end());
      if (r.tensor_shape.size() == 4 && r.tensor_shape[0] != 1) {
        return absl::InvalidArgumentError(
            "a Classify tensor holds one image: [C, H, W] or [1, C, H, W]");
      }
      if (r.tensor_shape.empty()) return absl::InvalidArgumentError("tensor without a shape");
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError("no input: set `image` or `tensor`");
  }
}

void FillResponse(const ClassifyRequest& request, const FrontendResult& result,
                  ClassifyResponse& response) {
  const Variant& variant = *result.variant;
  response.set_model(request.model());
  response.set_variant(variant.name());
  response.set_routing_generation(result.routing_generation);
  const std::vector<float> probabilities = Softmax(result.output.logits, variant.num_classes());
  const int64_t k = request.top_k() == 0 ? kDefaultTopK : request.top_k();
  for (const TopClass& c : TopK(probabilities.data(), variant.num_classes(), k)) {
    auto* out = response.add_classes();
    out->set_index(static_cast<int32_t>(c.index));
    out->set_label(ClassName(variant, c.index));
    out->set_probability(c.probability);
  }
  auto* timing = response.mutable_timing();
  timing->set_queue_us(result.output.queue_us);
  timing->set_preprocess_us(result.preprocess_us);
  timing->set_compute_us(result.output.compute_us);
  timing->set_total_us(result.total_us);
}

// FillResponse that reports an allocation failure as a status instead of throwing out of a
// completion callback (which would leave the call unanswered).
absl::Status FillResponseSafely(const ClassifyRequest& request, const FrontendResult& result,
                                ClassifyResponse& response) {
  try {
    FillResponse(request, result, response);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    response.Clear();
    return absl::ResourceExhaustedError(absl::StrCat("building the response failed: ", e.what()));
  }
}

// One ClassifyStream call. Reads requests one at a time (pausing at kMaxInFlight unanswered or
// unwritten ones), runs each through the frontend, and writes responses in completion order with
// one write in flight (gRPC allows no more). The call
// finishes once the client has half-closed, every request has been answered and every response
// written; the reactor deletes itself in OnDone.
class StreamReactor final : public grpc::ServerBidiReactor<ClassifyRequest, ClassifyResponse> {
 public:
  StreamReactor(grpc::CallbackServerContext* context, Frontend* frontend)
      : context_(context), frontend_(frontend) {
    StartRead(&incoming_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // half-close, or the call broke
      Step step;
      {
        absl::MutexLock lock(&mu_);
        reads_done_ = true;
        step = NextStepLocked();
      }
      Take(step);
      return;
    }
    auto request = std::make_shared<ClassifyRequest>(std::move(incoming_));
    if (request->request_id().empty()) request->set_request_id(NewRequestId());
    {
      absl::MutexLock lock(&mu_);
      ++pending_;
    }
    Submit(std::move(request));
    bool read_more = false;
    {
      absl::MutexLock lock(&mu_);
      read_more = !AtInFlightLimitLocked();
      read_paused_ = !read_more;
    }
    if (read_more) StartRead(&incoming_);
  }

  void OnWriteDone(bool ok) override {
    Step step;
    bool resume_reading = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) broken_ = true;
      step = NextStepLocked();
      resume_reading = ResumeReadingLocked();
    }
    Take(step);
    if (resume_reading) StartRead(&incoming_);
  }

  void OnDone() override { delete this; }

 private:
  // What to do after a state change; done outside the lock, since gRPC may run a reaction inline.
  enum class Step { kNothing, kWrite, kFinish };

  void Submit(std::shared_ptr<ClassifyRequest> request) {
    FrontendRequest r;
    r.api = Api::kClassifyStream;
    r.grpc_deadline = context_->deadline();
    if (absl::Status s = ToFrontendRequest(*request, r); !s.ok()) {
      frontend_->CountRejected(r, s);
      Answer(*request, s, FrontendResult{});
      return;
    }
    if (r.routing_key.empty()) r.routing_key = RoutingKeyFromMetadata(*context_);
    // `this` outlives every answer: the call finishes only when none is pending.
    frontend_->Infer(std::move(r), [this, request](absl::Status s, FrontendResult result) {
      Answer(*request, s, result);
    });
  }

  void Answer(const ClassifyRequest& request, const absl::Status& status,
              const FrontendResult& result) {
    ClassifyResponse response;
    absl::Status outcome = status;
    if (outcome.ok()) outcome = FillResponseSafely(request, result, response);
    response.set_request_id(request.request_id());
    if (!outcome.ok()) {
      response.mutable_error()->set_code(static_cast<int32_t>(outcome.code()));
      response.mutable_error()->set_message(std::string(outcome.message()));
    }
    Step step;
    bool resume_reading = false;
    {
      absl::MutexLock lock(&mu_);
      --pending_;
      if (!broken_) outbox_.push_back(std::move(response));
      step = NextStepLocked();
      resume_reading = ResumeReadingLocked();
    }
    Take(step);
    if (resume_reading) StartRead(&incoming_);
  }

  // Backpressure: a client that sends faster than it reads (or than the model computes) may have
  // at most kMaxInFlight requests queued or answered-but-unwritten; beyond that the stream stops
  // reading, so HTTP/2 flow control holds the client back instead of the server's memory.
  static constexpr int kMaxInFlight = 64;

  bool AtInFlightLimitLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_ + static_cast<int>(outbox_.size()) >= kMaxInFlight;
  }

  bool ResumeReadingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!read_paused_ || AtInFlightLimitLocked()) return false;
    read_paused_ = false;
    return true;
  }

  // Starts the next write when none is in flight, or finishes the call when everything is done.
  Step NextStepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return Step::kNothing;
    if (!broken_ && !outbox_.empty()) {
      writing_ = true;
      in_flight_ = std::move(outbox_.front());
      outbox_.pop_front();
      return Step::kWrite;
    }
    if (!reads_done_ || pending_ > 0) return Step::kNothing;
    finished_ = true;
    return Step::kFinish;
  }

  void Take(Step step) {
    if (step == Step::kWrite) StartWrite(&in_flight_);  // untouched until OnWriteDone
    if (step == Step::kFinish) {
      Finish(IsBroken() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream broken")
                        : grpc::Status::OK);
    }
  }

  bool IsBroken() {
    absl::MutexLock lock(&mu_);
    return broken_;
  }

  grpc::CallbackServerContext* const context_;
  Frontend* const frontend_;
  ClassifyRequest incoming_;  // touched only by the read chain
  absl::Mutex mu_;
  std::deque<ClassifyResponse> outbox_ ABSL_GUARDED_BY(mu_);
  ClassifyResponse in_flight_;  // owned by the write in flight (writing_)
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;  // no read in flight: at the in-flight limit
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerUnaryReactor* ClassifierService::Classify(grpc::CallbackServerContext* context,
                                                      const ClassifyRequest* request,
                                                      ClassifyResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  FrontendRequest r;
  r.api = Api::kClassify;
  r.grpc_deadline = context->deadline();
  r.is_cancelled = [context] { return context->IsCancelled(); };
  if (absl::Status s = ToFrontendRequest(*request, r); !s.ok()) {
    frontend_->CountRejected(r, s);
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (r.routing_key.empty()) r.routing_key = RoutingKeyFromMetadata(*context);
  const std::string request_id =
      request->request_id().empty() ? NewRequestId() : request->request_id();
  r.request_id = request_id;
  frontend_->Infer(std::move(r), [reactor, request, response, request_id](absl::Status status,
                                                                          FrontendResult result) {
    if (status.ok()) status = FillResponseSafely(*request, result, *response);
    if (status.ok()) response->set_request_id(request_id);
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ClassifierService::Feedback(grpc::CallbackServerContext* context,
                                                      const vitq::v1::FeedbackRequest* request,
                                                      vitq::v1::FeedbackResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<FeedbackOutcome> outcome =
      frontend_->Feedback(request->request_id(), request->label());
  if (outcome.ok()) {
    response->set_model(outcome->model);
    response->set_variant(outcome->variant);
    response->set_correct(outcome->correct);
  }
  reactor->Finish(ToGrpcStatus(outcome.status()));
  return reactor;
}

grpc::ServerBidiReactor<ClassifyRequest, ClassifyResponse>* ClassifierService::ClassifyStream(
    grpc::CallbackServerContext* context) {
  return new StreamReactor(context, frontend_);
}

}  // namespace vitq::server
