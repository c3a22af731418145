#include "tools/client/server_info_commands.h"

#include <google/protobuf/text_format.h>

#include <cstdio>

#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"

namespace vitq::client {
namespace {

using grpc::health::v1::HealthCheckResponse;

// Prints `message` in protobuf text format; returns the exit code.
int PrintAsText(const google::protobuf::Message& message) {
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(message, &text)) {
    return Fail(absl::InternalError("cannot print the response as protobuf text"));
  }
  std::fputs(text.c_str(), stdout);
  return kExitOk;
}

int ServerMetadata(inference::GRPCInferenceService::Stub& stub, int64_t timeout_ms) {
  grpc::ClientContext context;
  SetTimeout(timeout_ms, &context);
  inference::ServerMetadataResponse response;
  const grpc::Status status =
      stub.ServerMetadata(&context, inference::ServerMetadataRequest(), &response);
  if (!status.ok()) return Fail(ToAbslStatus(status));
  return PrintAsText(response);
}

int ModelMetadata(inference::GRPCInferenceService::Stub& stub, const MetadataFlags& flags) {
  grpc::ClientContext context;
  SetTimeout(flags.timeout_ms, &context);
  inference::ModelMetadataRequest request;
  request.set_name(flags.model);
  request.set_version(flags.variant);
  inference::ModelMetadataResponse response;
  const grpc::Status status = stub.ModelMetadata(&context, request, &response);
  if (!status.ok()) return Fail(ToAbslStatus(status));
  return PrintAsText(response);
}

}  // namespace

CLI::App* AddHealthCommand(CLI::App& app, HealthFlags& flags) {
  CLI::App* command = app.add_subcommand(
      "health",
      "Ask grpc.health.v1.Health/Check; prints SERVING, NOT_SERVING, ...; exit code 0 only "
      "when SERVING");
  command->add_option("--service", flags.service,
                      "service to ask about: empty = the whole server (default), "
                      "vitq.model.NAME = one model");
  AddTimeoutFlag(command, &flags.timeout_ms);
  AddConnectionFlags(command, &flags.connection);
  return command;
}

CLI::App* AddMetadataCommand(CLI::App& app, MetadataFlags& flags) {
  CLI::App* command = app.add_subcommand(
      "metadata",
      "Print the server's KServe metadata (name, version, extensions), or with --model the "
      "model's (versions, inputs, outputs), in protobuf text format");
  CLI::Option* model = command->add_option("--model,-m", flags.model,
                                           "model to describe (default: describe the server)");
  command
      ->add_option("--variant", flags.variant,
                   "model version (variant) to describe; default: the server's choice")
      ->needs(model);
  AddTimeoutFlag(command, &flags.timeout_ms);
  AddConnectionFlags(command, &flags.connection);
  return command;
}

int RunHealth(const HealthFlags& flags) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect(flags.connection);
  if (!channel.ok()) return Fail(channel.status());
  std::unique_ptr<grpc::health::v1::Health::Stub> stub =
      grpc::health::v1::Health::NewStub(*channel);
  grpc::ClientContext context;
  SetTimeout(flags.timeout_ms, &context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(flags.service);
  HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return Fail(ToAbslStatus(status));
  std::printf("%s\n", HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  return response.status() == HealthCheckResponse::SERVING ? kExitOk : kExitFailure;
}

int RunMetadata(const MetadataFlags& flags) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect(flags.connection);
  if (!channel.ok()) return Fail(channel.status());
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub =
      inference::GRPCInferenceService::NewStub(*channel);
  return flags.model.empty() ? ServerMetadata(*stub, flags.timeout_ms)
                             : ModelMetadata(*stub, flags);
}

}  // namespace vitq::client
