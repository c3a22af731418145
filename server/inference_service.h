// inference.GRPCInferenceService: the Open Inference Protocol (KServe v2) over our models.
//
// Conventions (also in docs/SERVING.md):
//   * model_version selects a variant ("fp32", "w8a8", ...); empty lets the router choose. The
//     response's model_version names the variant that answered.
//   * One input, either "image" (BYTES, shape [N] or [N, 1]: one encoded JPEG/PNG/BMP/WebP file
//     per element) or "input" (FP32, shape [N, C, H, W]: already preprocessed), in `contents` or
//     in raw_input_contents.
//   * Outputs "logits" (FP32 [N, classes], the default when the request names none),
//     "probabilities" (FP32 [N, classes], softmax) and "labels" (BYTES [N, k]: the top-k class
//     names, most probable first). All outputs are returned in raw_output_contents.
//   * Request parameters: "variant" (string, like model_version), "topk" (int, default 5; Triton's
//     per-output "classification" is accepted too), "timeout_us" or Triton's "timeout" (int, µs),
//     "priority" (int, 0 = highest), "ab_key" (string: sticky A/B routing key; gRPC metadata
//     "x-vitq-ab-key" works too), "label" (the true class(es): names or indexes, comma-separated,
//     one per image; counted in the variant's labeled accuracy).
//   * The response id is the request's id, or one the server assigns when it has none; that id
//     can be labeled later with vitq.v1.Classifier/Feedback.
//   * Response parameters: "variant", "routing_generation", "queue_us", "compute_us",
//     "preprocess_us".
#pragma once

#include "inference/grpc_service.grpc.pb.h"
#include "server/frontend.h"

namespace vitq::server {

class InferenceService final : public inference::GRPCInferenceService::CallbackService {
 public:
  explicit InferenceService(Frontend* frontend) : frontend_(frontend) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context,
                                            const inference::RepositoryIndexRequest* request,
                                            inference::RepositoryIndexResponse* response) override;

 private:
  Frontend* frontend_;
};

}  // namespace vitq::server
