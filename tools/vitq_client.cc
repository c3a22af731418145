// vitq-client: command-line client of the vitq model server, and its load tester (our
// perf_analyzer). Every subcommand takes the connection flags --address (default
// localhost:8001), --tls-ca / --tls-cert / --tls-key / --tls-server-name, --max-message-bytes
// and --connect-timeout-s; run `vitq-client SUBCOMMAND --help` for all flags.
//
//   # Top-5 classes of two images (the server's router picks the variant):
//   vitq-client classify --model deit_tiny cat.jpg dog.png
//   # Same through the Open Inference Protocol (KServe v2), asking for the w8a8 variant:
//   vitq-client classify --api kserve --model deit_tiny --variant w8a8 --top-k 3 cat.jpg
//
//   # Closed loop: 16 requests in flight for 30 s, after 100 warm-up requests:
//   vitq-client load --model deit_tiny --image cat.jpg --image dog.png --concurrency 16
//       --duration 30 --warmup-requests 100
//   # Open loop: 200 requests/s of a preprocessed tensor, 500 ms deadline, JSON for scripts:
//   vitq-client load --model deit_tiny --tensor-shape 3,224,224 --rate 200 --requests 6000
//       --timeout-ms 500 --json
//
//   # Readiness probe (exit 0 only when SERVING), whole server or one model:
//   vitq-client health --address vitq:8001 --service vitq.model.deit_tiny
//   # Server or model metadata, over mutual TLS:
//   vitq-client metadata --model deit_tiny --tls-ca ca.pem --tls-cert me.pem --tls-key me.key
//
//   # Hot switch and A/B (the admin port, a bearer token):
//   vitq-client admin --address vitq:8002 --token-file token set-routing --model deit_tiny
//       --weights w8a8=90,w4a4=10
//   vitq-client ab-report --address vitq:8002 --token-file token --model deit_tiny
//   # The true label of an answered request, for labeled accuracy:
//   vitq-client feedback --request-id vitq-1a2b3c4d-17 --label 3
//
// Exit codes: 0 success; 1 an RPC or the connection failed (stderr:
// "vitq-client: error: CODE_NAME: message"); 2 bad command line.
#include <CLI/CLI.hpp>
#include <optional>

#include "tools/client/admin_command.h"
#include "tools/client/classify_command.h"
#include "tools/client/connection.h"
#include "tools/client/load_command.h"
#include "tools/client/server_info_commands.h"

namespace {

// Like CLI11_PARSE, but a bad command line exits with kExitUsage (CLI11's own codes are 100+).
// Returns nullopt when parsing succeeded and the subcommand should run.
std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int cli11_code = app.exit(e);  // prints help, or the error and a --help hint
    return cli11_code == static_cast<int>(CLI::ExitCodes::Success) ? vitq::client::kExitOk
                                                                   : vitq::client::kExitUsage;
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace vitq::client;
  CLI::App app{
      "vitq-client: talk to a vitq model server over gRPC: classify images, load-test it, check "
      "its health, read its metadata, switch and compare its variants. Run `vitq-client "
      "SUBCOMMAND --help` for the flags of each."};
  app.require_subcommand(1);

  ClassifyFlags classify_flags;
  CLI::App* classify = AddClassifyCommand(app, classify_flags);
  LoadFlags load_flags;
  CLI::App* load = AddLoadCommand(app, load_flags);
  HealthFlags health_flags;
  CLI::App* health = AddHealthCommand(app, health_flags);
  MetadataFlags metadata_flags;
  CLI::App* metadata = AddMetadataCommand(app, metadata_flags);
  AdminFlags admin_flags;
  CLI::App* admin = AddAdminCommand(app, admin_flags);
  AdminFlags report_flags;
  CLI::App* ab_report = AddAbReportCommand(app, report_flags);
  FeedbackFlags feedback_flags;
  CLI::App* feedback = AddFeedbackCommand(app, feedback_flags);

  if (std::optional<int> exit_code = ParseCommandLine(app, argc, argv)) return *exit_code;
  if (*classify) return RunClassify(classify_flags);
  if (*load) return RunLoad(load_flags);
  if (*health) return RunHealth(health_flags);
  if (*metadata) return RunMetadata(metadata_flags);
  if (*admin) return RunAdmin(*admin, admin_flags);
  if (*ab_report) return RunAbReport(report_flags);
  if (*feedback) return RunFeedback(feedback_flags);
  return kExitUsage;  // unreachable: require_subcommand(1)
}
