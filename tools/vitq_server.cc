// vitq-server: serves the models of a model-repository config over gRPC (KServe v2 + vitq.v1
// Classifier + health + reflection) with Prometheus metrics on their own port.
//
//   vitq-server --config config/default.yaml
//   vitq-server --config config/default.yaml --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0
//
// Flags override the config file's `server:` section. On start it prints the addresses it bound
// ("vitq-server: listening on 127.0.0.1:40211"). SIGTERM or SIGINT drains: health turns
// NOT_SERVING, new requests get UNAVAILABLE, queued ones finish within drain_grace_s, exit 0.
// A second SIGTERM/SIGINT exits at once (status 1). A SIGTERM/SIGINT before the server listens
// (while variants load and warm up, which can take minutes on a busy node) exits at once, status
// 0: nothing has been accepted, so there is nothing to drain. SIGHUP reloads the config file's
// models (new and changed variants are loaded and warmed before traffic moves; a bad file changes
// nothing). With server.admin.listen (or --admin-listen) the vitq.v1.Admin service listens there,
// with the bearer token from server.admin.token_file / --admin-token-file / $VITQ_ADMIN_TOKEN.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "backends/malloc_tuning.h"
#include "backends/model.h"
#include "server/admin_service.h"
#include "server/model_io.h"
#include "server/repository_config.h"
#include "server/server.h"

namespace {

struct Flags {
  std::string config;
  std::string listen;
  std::string metrics_listen;
  std::string tls_cert, tls_key, tls_client_ca;
  double drain_grace_s = -1;
  int threads = 0;
  std::string admin_listen;
  std::string admin_token_file;
  bool check = false;
};

void AddFlags(CLI::App& app, Flags& f) {
  app.add_option("--config,-c", f.config,
                 "model-repository config (YAML): server settings, models, variants, batching; "
                 "see config/default.yaml")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--listen", f.listen,
                 "gRPC address HOST:PORT (overrides server.listen; port 0 picks a free port)");
  app.add_option("--metrics-listen", f.metrics_listen,
                 "Prometheus /metrics address HOST:PORT (overrides server.metrics_listen; port 0 "
                 "picks a free port; 'off' disables)");
  app.add_option("--tls-cert", f.tls_cert, "PEM certificate chain: serve TLS (with --tls-key)");
  app.add_option("--tls-key", f.tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", f.tls_client_ca,
                 "PEM CA bundle: require client certificates signed by it (mutual TLS)");
  app.add_option("--drain-grace-s", f.drain_grace_s,
                 "on SIGTERM/SIGINT, let queued requests finish for this many seconds "
                 "(overrides server.drain_grace_s, default 20)");
  app.add_option("--admin-listen", f.admin_listen,
                 "vitq.v1.Admin address HOST:PORT (overrides server.admin.listen; port 0 picks a "
                 "free port; 'off' disables). Keep it on loopback or a private network");
  app.add_option("--admin-token-file", f.admin_token_file,
                 "file holding the admin bearer token (overrides server.admin.token_file; "
                 "without either, the token itself is read from $VITQ_ADMIN_TOKEN)")
      ->check(CLI::ExistingFile);
  app.add_flag("--check", f.check,
               "validate the config and open every variant's artifact (no warm-up, no ports), "
               "print one line per variant, exit 0 if the server would start, 1 otherwise");
  app.add_option("--threads", f.threads,
                 "engine threads per forward pass (overrides server.engine_threads; default: "
                 "OMP_NUM_THREADS or all cores)");
}

void ApplyOverrides(const Flags& f, vitq::server::ServerConfig& c) {
  if (!f.listen.empty()) c.listen = f.listen;
  if (f.metrics_listen == "off") {
    c.metrics_listen.clear();
  } else if (!f.metrics_listen.empty()) {
    c.metrics_listen = f.metrics_listen;
  }
  if (!f.tls_cert.empty()) c.tls.cert = f.tls_cert;
  if (!f.tls_key.empty()) c.tls.key = f.tls_key;
  if (!f.tls_client_ca.empty()) c.tls.client_ca = f.tls_client_ca;
  if (f.drain_grace_s >= 0) c.drain_grace_s = f.drain_grace_s;
  if (f.threads > 0) c.engine_threads = f.threads;
  if (f.admin_listen == "off") {
    c.admin.listen.clear();
  } else if (!f.admin_listen.empty()) {
    c.admin.listen = f.admin_listen;
  }
  if (!f.admin_token_file.empty()) c.admin.token_file = f.admin_token_file;
}

// The host part of HOST:PORT, for printing the bound address.
std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

// SIGTERM / SIGINT / SIGHUP are turned into a byte on this pipe, read by the main thread. A handler
// (rather than blocking the signals and calling sigwait) also covers threads that libraries
// start before main, which would otherwise take the default action and kill the process.
int stop_pipe[2] = {-1, -1};

volatile sig_atomic_t stop_signals_seen = 0;
volatile sig_atomic_t listening = 0;

// Only async-signal-safe calls: a fixed message through write(2).
void WriteToStderr(const char* message) {
  (void)!write(STDERR_FILENO, message, std::char_traits<char>::length(message));
}

// The first stop signal starts a drain; a second one means "now": exit without waiting. Before
// the server listens no request exists, so a stop signal ends start-up rather than waiting for it.
void OnSignal(int signal_number) {
  if (signal_number != SIGHUP) {
    if (!listening) {
      WriteToStderr(
          "vitq-server: stop signal before serving; exiting without finishing start-up\n");
      _exit(0);
    }
    if (stop_signals_seen) _exit(1);
    stop_signals_seen = 1;
  }
  const unsigned char byte = static_cast<unsigned char>(signal_number);
  (void)!write(stop_pipe[1], &byte, 1);  // async-signal-safe; non-blocking
}

bool InstallSignalHandler() {
  if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return false;
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  return sigaction(SIGTERM, &action, nullptr) == 0 && sigaction(SIGINT, &action, nullptr) == 0 &&
         sigaction(SIGHUP, &action, nullptr) == 0;
}

int WaitForSignal() {
  unsigned char byte = 0;
  for (;;) {
    pollfd readable{stop_pipe[0], POLLIN, 0};
    if (poll(&readable, 1, -1) > 0 && read(stop_pipe[0], &byte, 1) == 1) return byte;
  }
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "vitq-server: error: %s\n", message.c_str());
  return 1;
}

// --check: what start-up would refuse, without warming up or binding: every artifact opens and
// builds, TLS files and the admin token are readable. Returns the exit code.
int CheckConfig(const vitq::server::ServerConfig& config) {
  for (const std::string& pem : {config.tls.cert, config.tls.key, config.tls.client_ca}) {
    if (pem.empty()) continue;
    if (auto text = vitq::server::ReadFileToString(pem); !text.ok())
      return Fail(std::string(text.status().message()));
  }
  if (!config.admin.listen.empty()) {
    if (auto token = vitq::server::ReadAdminToken(config.admin.token_file); !token.ok())
      return Fail(std::string(token.status().message()));
  }
  for (const auto& model : config.models) {
    for (const auto& variant : model.variants) {
      const std::string where =
          absl::StrCat("model '", model.name, "' variant '", variant.name, "'");
      absl::StatusOr<vitq::Precision> precision = vitq::ParsePrecision(variant.precision);
      if (!precision.ok()) return Fail(absl::StrCat(where, ": ", precision.status().message()));
      absl::StatusOr<std::unique_ptr<vitq::Model>> loaded;
      if (!variant.preset.empty()) {
        absl::StatusOr<vitq::ModelConfig> shape = vitq::PresetConfig(variant.preset);
        if (!shape.ok()) return Fail(absl::StrCat(where, ": ", shape.status().message()));
        loaded = vitq::RandomModel(*shape, /*seed=*/1, vitq::UniformPlan(*precision));
      } else {
        vitq::LoadOptions options;
        if (!variant.arch.empty()) options.arch = variant.arch;
        options.plan = vitq::UniformPlan(*precision);
        loaded = vitq::LoadModel(variant.path, options);
      }
      if (!loaded.ok()) return Fail(absl::StrCat(where, ": ", loaded.status().message()));
      std::printf("ok %s/%s: %s, %s, %lld classes\n", model.name.c_str(), variant.name.c_str(),
                  vitq::ArchName((*loaded)->config().arch).c_str(),
                  vitq::PrecisionSummary(**loaded).c_str(),
                  static_cast<long long>((*loaded)->config().num_classes));
    }
  }
  std::printf("vitq-server: %s is valid\n", config.source_path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "vitq-server: serves quantized vision transformers over gRPC (KServe v2 and "
      "vitq.v1.Classifier) with dynamic batching and Prometheus metrics"};
  Flags flags;
  AddFlags(app, flags);
  CLI11_PARSE(app, argc, argv);
  vitq::KeepFreedBuffersForReuse();

  absl::StatusOr<vitq::server::ServerConfig> config = vitq::server::LoadServerConfig(flags.config);
  if (!config.ok()) return Fail(std::string(config.status().message()));
  ApplyOverrides(flags, *config);
  if (flags.check) return CheckConfig(*config);

  if (!InstallSignalHandler()) return Fail("cannot install the SIGTERM/SIGINT/SIGHUP handler");
  auto server = vitq::server::VitqServer::Start(*config);
  if (!server.ok()) return Fail(std::string(server.status().message()));
  listening = 1;
  std::printf("vitq-server: listening on %s:%d\n", HostOf(config->listen).c_str(),
              (*server)->port());
  if ((*server)->metrics_port() > 0) {
    std::printf("vitq-server: metrics on http://%s:%d/metrics\n",
                HostOf(config->metrics_listen).c_str(), (*server)->metrics_port());
  }
  if ((*server)->admin_port() > 0) {
    std::printf("vitq-server: admin on %s:%d\n", HostOf(config->admin.listen).c_str(),
                (*server)->admin_port());
  }
  std::fflush(stdout);

  int signal_number = WaitForSignal();
  while (signal_number == SIGHUP) {
    std::fprintf(stderr, "vitq-server: received SIGHUP\n");
    (void)(*server)->ReloadConfig();  // logs what changed, or why the file was rejected
    signal_number = WaitForSignal();
  }
  std::fprintf(stderr, "vitq-server: received %s\n",
               signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  // A drain cut short by its grace is expected behaviour under load, not a failure: exit 0.
  (*server)->Drain(config->drain_grace_s);
  server->reset();
  std::fprintf(stderr, "vitq-server: stopped\n");
  return 0;
}
