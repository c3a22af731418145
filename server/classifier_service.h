// vitq.v1.Classifier: Classify (unary) and ClassifyStream (bidirectional; responses in completion
// order, matched by request_id; a failed request answers with `error` and the stream goes on)
// and Feedback (the true label of an earlier request, for the labeled accuracy per variant).
#pragma once

#include "server/frontend.h"
#include "vitq/v1/classifier.grpc.pb.h"

namespace vitq::server {

class ClassifierService final : public vitq::v1::Classifier::CallbackService {
 public:
  explicit ClassifierService(Frontend* frontend) : frontend_(frontend) {}

  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context,
                                     const vitq::v1::ClassifyRequest* request,
                                     vitq::v1::ClassifyResponse* response) override;
  grpc::ServerBidiReactor<vitq::v1::ClassifyRequest, vitq::v1::ClassifyResponse>* ClassifyStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Feedback(grpc::CallbackServerContext* context,
                                     const vitq::v1::FeedbackRequest* request,
                                     vitq::v1::FeedbackResponse* response) override;

 private:
  Frontend* frontend_;
};

}  // namespace vitq::server
