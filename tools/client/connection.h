// Connecting vitq-client to a server: the flags every subcommand shares (address, TLS, message
// size, connect timeout), the channel built from them, and the one way the tool reports errors.
//
// The channel is connected eagerly (Connect waits up to --connect-timeout-s), so a wrong address
// or a TLS mismatch fails once with a clear message instead of as one UNAVAILABLE per request.
#pragma once

#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vitq::client {

// Process exit codes of vitq-client.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // an RPC or the connection failed
inline constexpr int kExitUsage = 2;    // bad command line (CLI11 reports it)

struct ConnectionFlags {
  std::string address = "localhost:8001";  // HOST:PORT, or any gRPC target URI
  // TLS is on when tls_ca or tls_cert is set. Files hold PEM text.
  std::string tls_ca;                // root certificates; empty with tls_cert: gRPC's default roots
  std::string tls_cert;              // client certificate chain (mutual TLS); needs tls_key
  std::string tls_key;               // client private key; needs tls_cert
  std::string tls_server_name;       // name expected in the server certificate, instead of the host
  int max_message_bytes = 64 << 20;  // largest response accepted
  double connect_timeout_s = 10;     // how long Connect waits for the channel to be READY

  bool tls() const { return !tls_ca.empty() || !tls_cert.empty(); }
};

// Adds --address, --tls-ca, --tls-cert, --tls-key, --tls-server-name, --max-message-bytes and
// --connect-timeout-s to `app`, bound to `flags` (which must outlive parsing).
void AddConnectionFlags(CLI::App* app, ConnectionFlags* flags);

// Flag checks with plain messages ("--rate: must be > 0, got 0"); CLI11 2.1's own
// PositiveNumber / NonNegativeNumber print their range as a 300-digit number.
CLI::Validator Positive();
CLI::Validator NonNegative();

// Adds --timeout-ms (per-RPC deadline in milliseconds, 0 = none) bound to `timeout_ms`.
void AddTimeoutFlag(CLI::App* app, int64_t* timeout_ms);

// A channel to flags.address that is READY. NOT_FOUND when a TLS file cannot be read,
// UNAVAILABLE "cannot connect to ADDRESS within N s" when the channel does not connect in time.
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const ConnectionFlags& flags);

// Sets the deadline of `context` to now + timeout_ms; 0 leaves the call without a deadline.
void SetTimeout(int64_t timeout_ms, grpc::ClientContext* context);

// gRPC and Abseil share the google.rpc.Code numbering, so a code converts by value.
absl::Status ToAbslStatus(const grpc::Status& status);

// "RESOURCE_EXHAUSTED", "OK", ... for a gRPC status code.
std::string CodeName(grpc::StatusCode code);

// Whole file as bytes. NOT_FOUND when it cannot be opened.
absl::StatusOr<std::string> ReadFileBytes(const std::string& path);

// Prints "vitq-client: error: CODE_NAME: message" on stderr; returns kExitFailure.
int Fail(const absl::Status& status);

}  // namespace vitq::client
