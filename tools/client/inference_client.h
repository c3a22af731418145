// Sends prepared inference requests through gRPC's callback API, for either API (classify or
// kserve, see requests.h), and hands back an API-independent CallResult.
//
// Requests are encoded once per payload at construction and reused by every send, so a load
// test measures the server, not protobuf encoding of megabyte images. No thread is created per
// request: completions run on gRPC's own callback threads.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tools/client/requests.h"
#include "vitq/v1/classifier.pb.h"

namespace vitq::client {

// Outcome of one RPC, whichever API carried it.
struct CallResult {
  grpc::Status status;
  std::string model;                       // model that answered
  std::string variant;                     // classify: response.variant; kserve: model_version
  std::string request_id;                  // for Classifier.Feedback (kserve: response id)
  std::vector<Prediction> predictions;     // only with ClientOptions::decode_predictions
  std::optional<vitq::v1::Timing> timing;  // server-side timing; classify API only
};

struct ClientOptions {
  Api api = Api::kClassify;
  RequestOptions request;
  int64_t timeout_ms = 0;           // deadline of each RPC from its send; 0 = none
  bool decode_predictions = false;  // load tests need only status and variant: skip the top-k
};

class InferenceClient {
 public:
  using DoneCallback = std::function<void(CallResult)>;

  // One prepared request per payload; `payloads` may be discarded afterwards.
  static std::unique_ptr<InferenceClient> Create(std::shared_ptr<grpc::Channel> channel,
                                                 const ClientOptions& options,
                                                 const std::vector<Payload>& payloads);
  virtual ~InferenceClient() = default;

  // Number of prepared requests (= payloads).
  virtual size_t num_requests() const = 0;

  // Starts RPC number `request_index` (< num_requests()) and returns at once; `done` runs
  // exactly once, on a gRPC thread, when the RPC has ended. Contract: the client must outlive
  // every `done`, i.e. the owner waits for all of them before destroying it. `done` is the last
  // thing a call touches, so the owner may destroy the client as soon as the last one returns.
  virtual void Send(size_t request_index, DoneCallback done) = 0;
};

// Sends request `request_index` and blocks until its result is in.
CallResult SendAndWait(InferenceClient& client, size_t request_index);

}  // namespace vitq::client
