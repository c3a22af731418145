#include "tools/client/classify_command.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/client/inference_client.h"
#include "tools/client/requests.h"

namespace vitq::client {

void AddModelFlags(CLI::App* command, std::string* model, std::string* variant, std::string* api,
                   int32_t* top_k) {
  command->add_option("--model,-m", *model, "model name in the server's repository")->required();
  command->add_option("--variant", *variant,
                      "variant to use, e.g. w8a8 (kserve: the model version); default: the "
                      "server's router chooses");
  command
      ->add_option("--api", *api,
                   "classify = vitq.v1.Classifier/Classify, kserve = "
                   "inference.GRPCInferenceService/ModelInfer (Open Inference Protocol)")
      ->check(CLI::IsMember({"classify", "kserve"}))
      ->capture_default_str();
  command->add_option("--top-k,--topk,-k", *top_k, "number of most probable classes to ask for")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
}

namespace {

void PrintServerLine(const CallResult& result) {
  std::string line = absl::StrCat("  ", result.model);
  if (!result.variant.empty()) absl::StrAppend(&line, "/", result.variant);
  if (result.timing) {
    const vitq::v1::Timing& t = *result.timing;
    absl::StrAppendFormat(&line, ", queue %.3f ms, compute %.3f ms, total %.3f ms",
                          t.queue_us() / 1e3, t.compute_us() / 1e3, t.total_us() / 1e3);
  }
  if (!result.request_id.empty()) absl::StrAppend(&line, ", id ", result.request_id);
  std::printf("%s\n", line.c_str());
}

void PrintPredictions(const std::string& path, const CallResult& result) {
  std::printf("%s\n", path.c_str());
  for (const Prediction& p : result.predictions) {
    const std::string label = p.label.empty() ? "" : absl::StrCat(p.label, " ");
    std::printf("  %.4f  %s(class %lld)\n", p.probability, label.c_str(),
                static_cast<long long>(p.index));
  }
  PrintServerLine(result);
}

// Returns whether the image was classified; errors go to stderr.
bool ClassifyImage(const std::shared_ptr<grpc::Channel>& channel, const ClientOptions& options,
                   const std::string& path) {
  absl::StatusOr<Payload> payload = ReadImagePayload(path);
  if (!payload.ok()) {
    Fail(payload.status());
    return false;
  }
  std::unique_ptr<InferenceClient> client =
      InferenceClient::Create(channel, options, {*std::move(payload)});
  const CallResult result = SendAndWait(*client, 0);
  if (!result.status.ok()) {
    const absl::Status status = ToAbslStatus(result.status);
    Fail(absl::Status(status.code(), absl::StrCat(path, ": ", status.message())));
    return false;
  }
  PrintPredictions(path, result);
  std::fflush(stdout);  // keep stdout and stderr lines in order when both go to a terminal
  return true;
}

}  // namespace

CLI::App* AddClassifyCommand(CLI::App& app, ClassifyFlags& flags) {
  CLI::App* command = app.add_subcommand(
      "classify",
      "Classify image files (JPEG, PNG, BMP, WebP) on the server, one RPC per image; prints "
      "the top-k classes, the variant that answered and the server's timing");
  command->add_option("IMAGE_FILE", flags.images, "image files to classify, one RPC each")
      ->required();
  AddModelFlags(command, &flags.model, &flags.variant, &flags.api, &flags.top_k);
  command
      ->add_option("--label", flags.labels,
                   "true class of each image, in order (index or class name; repeat once per "
                   "image): counted in the labeled accuracy of the variant that answers")
      ->allow_extra_args(false);  // `--label A --label B x.png y.png`: files stay positional
  AddTimeoutFlag(command, &flags.timeout_ms);
  AddConnectionFlags(command, &flags.connection);
  return command;
}

int RunClassify(const ClassifyFlags& flags) {
  absl::StatusOr<Api> api = ParseApi(flags.api);
  if (!api.ok()) return Fail(api.status());
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect(flags.connection);
  if (!channel.ok()) return Fail(channel.status());
  ClientOptions options;
  options.api = *api;
  options.request = {flags.model, flags.variant, flags.top_k, /*label=*/""};
  options.timeout_ms = flags.timeout_ms;
  options.decode_predictions = true;
  if (!flags.labels.empty() && flags.labels.size() != flags.images.size()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--label: give one label per image (",
                                                        flags.images.size(), "), got ",
                                                        flags.labels.size())));
  }
  bool all_ok = true;
  for (size_t i = 0; i < flags.images.size(); ++i) {
    if (!flags.labels.empty()) options.request.label = flags.labels[i];
    all_ok = ClassifyImage(*channel, options, flags.images[i]) && all_ok;
  }
  return all_ok ? kExitOk : kExitFailure;
}

}  // namespace vitq::client
