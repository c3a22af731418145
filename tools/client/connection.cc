#include "tools/client/connection.h"

#include <chrono>
#include <climits>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vitq::client {

namespace {

// A check that `input` is a number for which `accept` holds; `requirement` reads "> 0".
CLI::Validator NumberCheck(bool (*accept)(double), const std::string& requirement,
                           const std::string& name) {
  return CLI::Validator(
      [accept, requirement](std::string& input) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(input, value)) return "'" + input + "' is not a number";
        return accept(value) ? std::string() : "must be " + requirement + ", got " + input;
      },
      name);
}

}  // namespace

CLI::Validator Positive() {
  return NumberCheck(
      +[](double v) { return v > 0; }, "> 0", "POSITIVE");
}

CLI::Validator NonNegative() {
  return NumberCheck(
      +[](double v) { return v >= 0; }, ">= 0", "NONNEGATIVE");
}

void AddConnectionFlags(CLI::App* app, ConnectionFlags* flags) {
  app->add_option("--address,-a", flags->address, "server address HOST:PORT (gRPC port)")
      ->capture_default_str();
  CLI::Option* ca =
      app->add_option("--tls-ca", flags->tls_ca,
                      "PEM file of root certificates; turns TLS on (default: plaintext)");
  ca->check(CLI::ExistingFile);
  CLI::Option* cert = app->add_option(
      "--tls-cert", flags->tls_cert,
      "PEM client certificate chain for mutual TLS; turns TLS on (with gRPC's default roots "
      "unless --tls-ca is given)");
  cert->check(CLI::ExistingFile);
  CLI::Option* key = app->add_option("--tls-key", flags->tls_key, "PEM private key of --tls-cert");
  key->check(CLI::ExistingFile);
  cert->needs(key);
  key->needs(cert);
  app->add_option("--tls-server-name", flags->tls_server_name,
                  "name to expect in the server certificate instead of the address host "
                  "(e.g. when connecting by IP)")
      ->needs(ca);
  app->add_option("--max-message-bytes", flags->max_message_bytes,
                  "largest response accepted, in bytes (default 64 MiB)")
      ->check(CLI::Range(1, INT_MAX))
      ->capture_default_str();
  app->add_option("--connect-timeout-s", flags->connect_timeout_s,
                  "seconds to wait for the connection before giving up")
      ->check(Positive())
      ->capture_default_str();
}

void AddTimeoutFlag(CLI::App* app, int64_t* timeout_ms) {
  app->add_option("--timeout-ms", *timeout_ms,
                  "deadline of each RPC in milliseconds, from the moment it is sent; 0 = none")
      ->check(NonNegative())
      ->capture_default_str();
}

namespace {

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> CredentialsFor(
    const ConnectionFlags& flags) {
  if (!flags.tls()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  if (!flags.tls_ca.empty()) {
    absl::StatusOr<std::string> ca = ReadFileBytes(flags.tls_ca);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
  }
  if (!flags.tls_cert.empty()) {
    absl::StatusOr<std::string> cert = ReadFileBytes(flags.tls_cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFileBytes(flags.tls_key);
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *std::move(cert);
    options.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(options);
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const ConnectionFlags& flags) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = CredentialsFor(flags);
  if (!credentials.ok()) return credentials.status();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(flags.max_message_bytes);
  if (!flags.tls_server_name.empty()) args.SetSslTargetNameOverride(flags.tls_server_name);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(flags.address, *credentials, args);
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(flags.connect_timeout_s));
  if (!channel->WaitForConnected(deadline)) {
    // A failed TLS handshake looks exactly like an unreachable server from here.
    const char* hint =
        flags.tls() ? " (or the TLS handshake failed: check --tls-ca, --tls-cert/--tls-key and "
                      "--tls-server-name)"
                    : "";
    return absl::UnavailableError(absl::StrCat("cannot connect to ", flags.address, " within ",
                                               flags.connect_timeout_s, " s", hint));
  }
  return channel;
}

void SetTimeout(int64_t timeout_ms, grpc::ClientContext* context) {
  if (timeout_ms <= 0) return;
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
}

absl::Status ToAbslStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

absl::StatusOr<std::string> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return std::move(bytes).str();
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "vitq-client: error: %s: %s\n",
               absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return kExitFailure;
}

}  // namespace vitq::client
