// vitq-client health and vitq-client metadata: one-shot questions to the server.
//
//   vitq-client health [--service vitq.model.deit_tiny]   grpc.health.v1.Health/Check; prints
//                                                         SERVING, NOT_SERVING, ...; exit 0 only
//                                                         when SERVING (usable as a probe)
//   vitq-client metadata [--model deit_tiny [--variant int8]]
//                                                         KServe ServerMetadata, or ModelMetadata
//                                                         of one model, printed as protobuf text
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "tools/client/connection.h"

namespace vitq::client {

struct HealthFlags {
  ConnectionFlags connection;
  std::string service;     // "" = the whole server; vitq also knows "vitq.model.<name>"
  int64_t timeout_ms = 0;  // RPC deadline; 0 = none
};

struct MetadataFlags {
  ConnectionFlags connection;
  std::string model;       // empty: server metadata
  std::string variant;     // model version; empty: the server's choice
  int64_t timeout_ms = 0;  // RPC deadline; 0 = none
};

// Add the subcommands to `app`, their options bound to `flags` (which must outlive parsing).
CLI::App* AddHealthCommand(CLI::App& app, HealthFlags& flags);
CLI::App* AddMetadataCommand(CLI::App& app, MetadataFlags& flags);

// Return the process exit code.
int RunHealth(const HealthFlags& flags);
int RunMetadata(const MetadataFlags& flags);

}  // namespace vitq::client
