// gRPC glue shared by the services: status conversion and request metadata.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"

namespace vitq::server {

// absl::Status → grpc::Status: the one place where engine and server errors become gRPC codes.
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  // absl::StatusCode and grpc::StatusCode share the canonical numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// The sticky A/B key a client sent as gRPC metadata "x-vitq-ab-key"; empty when absent.
inline std::string RoutingKeyFromMetadata(const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("x-vitq-ab-key");
  return it == metadata.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

}  // namespace vitq::server
