#include "server/variant.h"

#include <omp.h>
#include <openssl/evp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "server/engine_thread.h"
#include "server/model_io.h"

namespace vitq::server {
namespace {

int64_t MicrosSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

absl::Status Annotate(const absl::Status& status, const std::string& where) {
  return absl::Status(status.code(), absl::StrCat(where, ": ", status.message()));
}

// OpenMP's thread count is per calling thread: set on the engine thread for each piece of work
// (variants may differ in it).
void UseEngineThreads(int engine_threads) {
  if (engine_threads > 0) omp_set_num_threads(engine_threads);
}

}  // namespace

absl::StatusOr<std::string> FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<char> chunk(1 << 20);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    EVP_DigestUpdate(ctx.get(), chunk.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &length);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i)
    absl::StrAppend(&hex, absl::Hex(digest[i], absl::kZeroPad2));
  return hex;
}

// Feeds the batcher's queue events into the variant's Prometheus series.
class Variant::Observer final : public BatchObserver {
 public:
  explicit Observer(const VariantMetrics& series) : series_(series) {}
  void OnBatch(int /*num_tasks*/, int num_images) override {
    if (series_.batch_size) series_.batch_size->Observe(num_images);
  }
  void OnTaskDequeued(absl::StatusCode /*outcome*/, int64_t queue_time_us) override {
    if (series_.queue_seconds) series_.queue_seconds->Observe(queue_time_us * 1e-6);
    if (series_.queue_depth) series_.queue_depth->Decrement();
  }

 private:
  VariantMetrics series_;
};

absl::StatusOr<std::shared_ptr<Variant>> Variant::Load(const std::string& model_name,
                                                       const VariantConfig& config,
                                                       const BatcherOptions& batching,
                                                       ServerMetrics* metrics, int engine_threads) {
  const std::string where = absl::StrCat("model '", model_name, "' variant '", config.name, "'");
  absl::StatusOr<Precision> precision = ParsePrecision(config.precision);
  if (!precision.ok()) return Annotate(precision.status(), where);
  if (!config.preset.empty()) {
    absl::StatusOr<ModelConfig> shape = PresetConfig(config.preset);
    if (!shape.ok()) return Annotate(shape.status(), where);
    absl::StatusOr<std::unique_ptr<Model>> model = absl::InternalError("not built");
    EngineThread::Shared().Run([&] {
      UseEngineThreads(engine_threads);
      model = RandomModel(*shape, /*seed=*/1, UniformPlan(*precision));
    });
    if (!model.ok()) return Annotate(model.status(), where);
    return FromModel(model_name, config, batching, std::move(*model), metrics, "", engine_threads);
  }
  LoadOptions options;
  if (!config.arch.empty()) options.arch = config.arch;
  options.plan = UniformPlan(*precision);
  // Hashed before loading so that the metrics label exists from the first request.
  absl::StatusOr<std::string> sha = FileSha256(config.path);
  if (!sha.ok()) return Annotate(sha.status(), where);
  // Reading and building the model starts no OpenMP work (the oneDNN reorders happen at warm-up,
  // on the engine thread), so it runs here and a hot load does not hold up serving.
  // EngineThread.LoadingStartsNoOpenMpThreads guards that.
  absl::StatusOr<std::unique_ptr<Model>> model = LoadModel(config.path, options);
  if (!model.ok()) return Annotate(model.status(), where);
  absl::StatusOr<std::shared_ptr<Variant>> variant = FromModel(
      model_name, config, batching, std::move(*model), metrics, std::move(*sha), engine_threads);
  if (!variant.ok()) return variant;
  std::error_code ignored;
  (*variant)->weight_bytes_ =
      static_cast<int64_t>(std::filesystem::file_size(config.path, ignored));
  return variant;
}

absl::StatusOr<std::shared_ptr<Variant>> Variant::FromModel(
    const std::string& model_name, const VariantConfig& config, const BatcherOptions& batching,
    std::unique_ptr<Model> model, ServerMetrics* metrics, std::string artifact_sha256,
    int engine_threads) {
  const std::string where = absl::StrCat("model '", model_name, "' variant '", config.name, "'");
  std::shared_ptr<Variant> variant(
      new Variant(model_name, config, batching, std::move(model), metrics));
  absl::StatusOr<std::vector<std::string>> names = ClassNamesFor(variant->model_config(), "");
  if (!names.ok()) return Annotate(names.status(), where);
  if (!names->empty() && static_cast<int64_t>(names->size()) != variant->num_classes()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": the labels list ", names->size(),
                                                   " classes but the model has ",
                                                   variant->num_classes()));
  }
  variant->class_names_ = std::move(*names);
  variant->artifact_sha256_ = std::move(artifact_sha256);
  variant->engine_threads_ = engine_threads;
  if (absl::Status s = variant->Start(); !s.ok()) return Annotate(s, where);
  return variant;
}

Variant::Variant(std::string model_name, VariantConfig config, BatcherOptions batching,
                 std::unique_ptr<Model> model, ServerMetrics* metrics)
    : model_name_(std::move(model_name)),
      config_(std::move(config)),
      batching_(std::move(batching)),
      model_(std::move(model)),
      metrics_(metrics),
      stats_(Clock::Real()->NowMicros()) {
  batching_.name = absl::StrCat(model_name_, "/", config_.name);
  preprocess_ = PreprocessOptionsFor(model_->config());
  preprocess_.num_threads = 1;  // one request per gRPC thread; never fork an OpenMP team
}

Variant::~Variant() {
  StopBackgroundWaits();
  if (batcher_) batcher_->Stop();
  if (metrics_) metrics_->RemoveVariant(series_);
}

absl::Status Variant::Start() {
  // Describing the kernels creates batch-1 primitives: engine work, on the engine thread.
  EngineThread::Shared().Run([this] {
    UseEngineThreads(engine_threads_);
    precision_ = PrecisionSummary(*model_);
  });
  if (absl::Status s = WarmUp(); !s.ok()) return s;
  if (metrics_) {
    series_ = metrics_->ForVariant(model_name_, config_.name,
                                   {ArchName(model_config().arch), precision_, artifact_sha256_});
  }
  observer_ = std::make_unique<Observer>(series_);
  BatcherOptions options = batching_;
  options.observer = observer_.get();
  auto batcher = JobBatcher::Create(options, [this](auto& batch) { RunBatch(batch); });
  if (!batcher.ok()) return batcher.status();
  batcher_ = std::move(*batcher);
  return absl::OkStatus();
}

// Runs every batch size the batcher can form once: oneDNN creates its primitives per shape, and
// the first request must not pay for that.
absl::Status Variant::WarmUp() {
  const ModelConfig& c = model_config();
  for (int batch = 1; batch <= batching_.max_batch_size; ++batch) {
    Tensor images = Tensor::Zeros({batch, c.in_chans, c.img_size, c.img_size});
    EngineRun run = RunEngine(images, std::nullopt);
    if (!run.logits.ok()) return run.logits.status();
  }
  return absl::OkStatus();
}

int64_t Variant::image_elements() const {
  const ModelConfig& c = model_config();
  return c.in_chans * c.img_size * c.img_size;
}

absl::Status Variant::Submit(InferInput input, InferCallback done) {
  if (input.num_images < 1 ||
      static_cast<int64_t>(input.images.size()) != input.num_images * image_elements()) {
    return absl::InvalidArgumentError(absl::StrCat("expected ", input.num_images, " images of ",
                                                   image_elements(), " values, got ",
                                                   input.images.size(), " values"));
  }
  auto task = std::make_unique<JobBatcher::TaskType>();
  task->num_images = input.num_images;
  task->deadline_us = input.deadline_us;
  task->priority = input.priority;
  task->is_cancelled = input.is_cancelled;
  const bool real = !input.background;
  task->payload.input = std::move(input);
  JobBatcher::TaskType* job = task.get();
  // The batcher calls `done` while the task is alive, exactly once.
  task->done = [this, job, real, done = std::move(done)](absl::Status status) {
    if (real) RealRequestLeft();
    done(std::move(status), std::move(job->payload.output));
  };
  // Counted before it can be dequeued (and decremented) by the worker.
  if (series_.queue_depth) series_.queue_depth->Increment();
  if (real) RealRequestArrived();
  absl::Status accepted = batcher_->Schedule(std::move(task));
  if (!accepted.ok()) {
    if (series_.queue_depth) series_.queue_depth->Decrement();
    if (real) RealRequestLeft();
  }
  return accepted;
}

void Variant::RealRequestArrived() {
  real_pending_.fetch_add(1);
  EngineThread::Shared().RealWorkQueued();
}

void Variant::RealRequestLeft() {
  real_pending_.fetch_sub(1);
  EngineThread::Shared().RealWorkDone();
}

Variant::EngineRun Variant::RunEngine(const Tensor& images,
                                      std::optional<SteadyTime> background_deadline) const {
  EngineRun run;
  const SteadyTime submitted = std::chrono::steady_clock::now();
  auto forward = [&] {
    const SteadyTime start = std::chrono::steady_clock::now();
    run.wait_us = MicrosSince(submitted);
    UseEngineThreads(engine_threads_);
    run.logits = model_->Forward(images);
    run.compute_us = MicrosSince(start);
  };
  if (!background_deadline) {
    EngineThread::Shared().Run(forward);
    run.ran = true;
  } else {
    // A real request for this variant must not wait behind its own shadow batch, nor a drain.
    run.ran = EngineThread::Shared().RunInBackground(forward, *background_deadline, [this] {
      return real_pending_.load() > 0 || draining_.load();
    });
  }
  return run;
}

// The earliest deadline of the batch's tasks, on the steady clock the engine thread uses.
Variant::SteadyTime Variant::EarliestDeadline(
    const std::vector<std::unique_ptr<JobBatcher::TaskType>>& batch) const {
  const int64_t now_us = batcher_->clock().NowMicros();
  int64_t left_us = kBackgroundWaitLimitUs;
  for (const auto& task : batch) {
    if (task->deadline_us > 0) left_us = std::min(left_us, task->deadline_us - now_us);
  }
  return std::chrono::steady_clock::now() +
         std::chrono::microseconds(std::max<int64_t>(left_us, 0));
}

void Variant::RunBatch(std::vector<std::unique_ptr<JobBatcher::TaskType>>& batch) {
  const ModelConfig& c = model_config();
  int total = 0;
  bool background = true;  // only shadow copies
  for (const auto& task : batch) {
    total += task->num_images;
    background = background && task->payload.input.background;
  }
  const int64_t now_us = batcher_->clock().NowMicros();
  // (total, C, H, W)
  Tensor images({total, c.in_chans, c.img_size, c.img_size});
  float* dst = images.data();
  for (const auto& task : batch) {
    task->payload.output.queue_us = now_us - task->enqueue_time_us();
    dst = std::copy(task->payload.input.images.begin(), task->payload.input.images.end(), dst);
    task->payload.input.images = {};  // free request memory early
  }
  EngineRun run =
      RunEngine(images, background ? std::optional(EarliestDeadline(batch)) : std::nullopt);
  if (!run.ran) {
    for (auto& task : batch) {
      task->Complete(absl::DeadlineExceededError(
          "shadow copy dropped: real requests kept the engine busy until its deadline, or came "
          "for its own variant"));
    }
    return;
  }
  if (series_.compute_seconds) series_.compute_seconds->Observe(run.compute_us * 1e-6);
  if (!run.logits.ok()) {
    std::fprintf(stderr, "vitq-server: %s: forward pass failed: %s\n", batching_.name.c_str(),
                 std::string(run.logits.status().message()).c_str());
    for (auto& task : batch) task->Complete(absl::InternalError("the forward pass failed"));
    return;
  }
  const int64_t classes = c.num_classes;
  const float* row = run.logits->data();
  for (auto& task : batch) {
    InferOutput& out = task->payload.output;
    out.logits.assign(row, row + task->num_images * classes);
    row += task->num_images * classes;
    // Waiting for another variant's batch on the engine thread counts as queueing.
    out.queue_us += run.wait_us;
    out.compute_us = run.compute_us;
    out.batch_images = total;
    task->Complete(absl::OkStatus());
  }
}

absl::Status Variant::Drain(int64_t grace_us) {
  StopBackgroundWaits();
  return batcher_->Drain(grace_us);
}

// A shadow batch waiting for idle engine time gives up, so that draining is not held back by it.
void Variant::StopBackgroundWaits() {
  draining_ = true;
  EngineThread::Shared().Recheck();
}

}  // namespace vitq::server
