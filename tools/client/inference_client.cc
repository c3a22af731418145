#include "tools/client/inference_client.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "inference/grpc_service.grpc.pb.h"
#include "tools/client/connection.h"
#include "vitq/v1/classifier.grpc.pb.h"

namespace vitq::client {
namespace {

// What gRPC needs alive from the start of an RPC until its callback has run.
template <typename Response>
struct PendingCall {
  grpc::ClientContext context;
  Response response;
};

CallResult ResultOf(const grpc::Status& status, const vitq::v1::ClassifyResponse& response,
                    bool decode_predictions) {
  CallResult result;
  result.status = status;
  if (!status.ok()) return result;
  result.model = response.model();
  result.variant = response.variant();
  result.request_id = response.request_id();
  result.timing = response.timing();
  if (decode_predictions) result.predictions = PredictionsOf(response);
  return result;
}

CallResult ResultOf(const grpc::Status& status, const inference::ModelInferResponse& response,
                    bool decode_predictions, int32_t top_k) {
  CallResult result;
  result.status = status;
  if (!status.ok()) return result;
  result.model = response.model_name();
  result.variant = response.model_version();
  result.request_id = response.id();
  if (!decode_predictions) return result;
  absl::StatusOr<std::vector<Prediction>> predictions = PredictionsOf(response, top_k);
  if (predictions.ok()) {
    result.predictions = *std::move(predictions);
  } else {
    // The server said OK but the reply is unusable: report it like a failed call.
    result.status =
        grpc::Status(grpc::StatusCode::INTERNAL, std::string(predictions.status().message()));
  }
  return result;
}

class ClassifyClient final : public InferenceClient {
 public:
  ClassifyClient(std::shared_ptr<grpc::Channel> channel, const ClientOptions& options,
                 const std::vector<Payload>& payloads)
      : stub_(vitq::v1::Classifier::NewStub(std::move(channel))), options_(options) {
    for (const Payload& payload : payloads) {
      requests_.push_back(MakeClassifyRequest(payload, options.request));
    }
  }

  size_t num_requests() const override { return requests_.size(); }

  void Send(size_t request_index, DoneCallback done) override {
    // Owned by the callback: std::function needs a copyable lambda, so no unique_ptr capture.
    auto* call = new PendingCall<vitq::v1::ClassifyResponse>;
    SetTimeout(options_.timeout_ms, &call->context);
    auto on_done = [call, done = std::move(done),
                    decode = options_.decode_predictions](grpc::Status status) {
      CallResult result = ResultOf(status, call->response, decode);
      delete call;
      done(std::move(result));
    };
    stub_->async()->Classify(&call->context, &requests_[request_index], &call->response,
                             std::move(on_done));
  }

 private:
  std::unique_ptr<vitq::v1::Classifier::Stub> stub_;
  const ClientOptions options_;
  std::vector<vitq::v1::ClassifyRequest> requests_;  // read-only while RPCs are in flight
};

class KServeClient final : public InferenceClient {
 public:
  KServeClient(std::shared_ptr<grpc::Channel> channel, const ClientOptions& options,
               const std::vector<Payload>& payloads)
      : stub_(inference::GRPCInferenceService::NewStub(std::move(channel))), options_(options) {
    for (const Payload& payload : payloads) {
      requests_.push_back(MakeModelInferRequest(payload, options.request));
    }
  }

  size_t num_requests() const override { return requests_.size(); }

  void Send(size_t request_index, DoneCallback done) override {
    auto* call = new PendingCall<inference::ModelInferResponse>;
    SetTimeout(options_.timeout_ms, &call->context);
    auto on_done = [call, done = std::move(done), decode = options_.decode_predictions,
                    top_k = options_.request.top_k](grpc::Status status) {
      CallResult result = ResultOf(status, call->response, decode, top_k);
      delete call;
      done(std::move(result));
    };
    stub_->async()->ModelInfer(&call->context, &requests_[request_index], &call->response,
                               std::move(on_done));
  }

 private:
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
  const ClientOptions options_;
  std::vector<inference::ModelInferRequest> requests_;  // read-only while RPCs are in flight
};

}  // namespace

std::unique_ptr<InferenceClient> InferenceClient::Create(std::shared_ptr<grpc::Channel> channel,
                                                         const ClientOptions& options,
                                                         const std::vector<Payload>& payloads) {
  if (options.api == Api::kKServe) {
    return std::make_unique<KServeClient>(std::move(channel), options, payloads);
  }
  return std::make_unique<ClassifyClient>(std::move(channel), options, payloads);
}

CallResult SendAndWait(InferenceClient& client, size_t request_index) {
  CallResult result;
  absl::Notification finished;
  client.Send(request_index, [&](CallResult r) {
    result = std::move(r);
    finished.Notify();
  });
  finished.WaitForNotification();
  return result;
}

}  // namespace vitq::client
