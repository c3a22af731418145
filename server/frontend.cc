#include "server/frontend.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/output.h"

namespace vitq::server {
namespace {

int64_t MicrosBetween(std::chrono::steady_clock::time_point from,
                      std::chrono::steady_clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::microseconds>(to - from).count();
}

// Absolute deadline on the batcher's clock (steady, microseconds): the tighter of the request's
// own timeout, counted from its arrival, and the gRPC deadline. 0 = none.
int64_t DeadlineMicros(const FrontendRequest& request) {
  const auto steady_now = std::chrono::steady_clock::now();
  const int64_t now_us = Clock::Real()->NowMicros();
  int64_t deadline_us = 0;
  if (request.timeout_us > 0) {
    // Clamped so that now + timeout cannot overflow: anything past a year means "no hurry".
    const int64_t timeout_us =
        std::min<int64_t>(request.timeout_us, int64_t{365} * 86400 * 1000000);
    deadline_us = now_us - MicrosBetween(request.arrival, steady_now) + timeout_us;
  }
  if (request.grpc_deadline != std::chrono::system_clock::time_point::max()) {
    const int64_t left_us =
        std::min<int64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                              request.grpc_deadline - std::chrono::system_clock::now())
                              .count(),
                          int64_t{365} * 86400 * 1000000);
    // A deadline that has passed becomes "1 µs ago" so that the batcher rejects it (0 = none).
    const int64_t grpc_us = std::max<int64_t>(now_us + left_us, 1);
    deadline_us = deadline_us == 0 ? grpc_us : std::min(deadline_us, grpc_us);
  }
  return deadline_us;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Number of images in a tensor input of `shape`, which must be [N, C, H, W] or [C, H, W] with
// C, H, W those of `variant`.
absl::StatusOr<int> TensorImages(const std::vector<int64_t>& shape, size_t num_values,
                                 const Variant& variant) {
  const ModelConfig& c = variant.model_config();
  const std::vector<int64_t> chw = {c.in_chans, c.img_size, c.img_size};
  const bool batched = shape.size() == 4;
  if ((shape.size() != 3 && !batched) || !std::equal(chw.begin(), chw.end(), shape.end() - 3)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor shape ", ShapeString(shape),
                                                   " does not fit the model: expected [N, ",
                                                   absl::StrJoin(chw, ", "), "]"));
  }
  const int64_t n = batched ? shape[0] : 1;
  if (n < 1 || n > variant.max_batch_size()) {
    return absl::InvalidArgumentError(absl::StrCat("batch of ", n,
                                                   " images; this model takes 1 to ",
                                                   variant.max_batch_size(), " per request"));
  }
  if (static_cast<int64_t>(num_values) != n * variant.image_elements()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor shape ", ShapeString(shape), " needs ",
                                                   n * variant.image_elements(), " values, got ",
                                                   num_values));
  }
  return static_cast<int>(n);
}

double Uniform01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

// Copies of sampled requests wait behind at most this long in the reference's queue.
constexpr int64_t kShadowTimeoutUs = 10 * 1000000;

// True classes from "3" / "Dress" / "3,Dress" (one per image): indexes, or names matched without
// regard to case.
absl::StatusOr<std::vector<int64_t>> ParseLabels(const std::string& text,
                                                 const std::vector<std::string>& class_names,
                                                 int64_t num_classes, size_t num_images) {
  std::vector<std::string> parts = absl::StrSplit(text, ',');
  if (parts.size() != num_images) {
    return absl::InvalidArgumentError(absl::StrCat("label: give one label per image (", num_images,
                                                   "), comma-separated; got ", parts.size()));
  }
  std::vector<int64_t> classes;
  for (std::string& part : parts) {
    absl::StripAsciiWhitespace(&part);
    int64_t index = -1;
    if (absl::SimpleAtoi(part, &index)) {
      if (index < 0 || index >= num_classes) {
        return absl::InvalidArgumentError(
            absl::StrCat("label ", index, " is not a class index (0 to ", num_classes - 1, ")"));
      }
    } else {
      auto it = std::find_if(class_names.begin(), class_names.end(), [&part](const std::string& n) {
        return absl::EqualsIgnoreCase(n, part);
      });
      if (it == class_names.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("label '", part, "' is neither a class index nor a class name (",
                         absl::StrJoin(class_names, ", "), ")"));
      }
      index = it - class_names.begin();
    }
    classes.push_back(index);
  }
  return classes;
}

void CountLabeled(const Variant& variant, bool correct) {
  variant.stats().OnLabeled(correct);
  prometheus::Counter* counter =
      correct ? variant.series().labeled_correct : variant.series().labeled_wrong;
  if (counter) counter->Increment();
}

// Compares a variant's logits with its reference's, image by image, into its shadow metrics.
void CompareWithReference(const Variant& compared, const std::vector<float>& logits,
                          const std::vector<float>& reference_logits, int64_t classes) {
  const VariantMetrics& series = compared.series();
  const size_t images = logits.size() / classes;
  for (size_t i = 0; i < images && (i + 1) * classes <= reference_logits.size(); ++i) {
    const float* mine = logits.data() + i * classes;
    const float* theirs = reference_logits.data() + i * classes;
    const bool agreed = ArgMax(mine, classes) == ArgMax(theirs, classes);
    const double cosine = LogitCosine(mine, theirs, classes);
    compared.stats().OnShadowCompared(agreed, cosine);
    if (series.shadow_agree) (agreed ? series.shadow_agree : series.shadow_disagree)->Increment();
    if (series.shadow_cosine) series.shadow_cosine->Observe(cosine);
    if (series.shadow_kl) series.shadow_kl->Observe(SoftmaxKlDivergence(theirs, mine, classes));
  }
  if (series.shadow_agreement) series.shadow_agreement->Set(compared.stats().shadow_agreement());
}

void CountShadowDropped(const Variant& compared) {
  compared.stats().OnShadowDropped();
  if (compared.series().shadow_dropped) compared.series().shadow_dropped->Increment();
}

}  // namespace

std::string NewRequestId() {
  static const std::string prefix = [] {
    std::random_device random;
    return absl::StrCat("vitq-", absl::Hex(random(), absl::kZeroPad8), "-");
  }();
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(prefix, counter.fetch_add(1) + 1);
}

void Frontend::Infer(FrontendRequest request, FrontendCallback done) {
  // Counted until the request is queued (or refused), so that a drain waits for requests that
  // passed the draining check but are still being decoded.
  preparing_.fetch_add(1);
  struct Prepared {
    std::atomic<int>& count;
    ~Prepared() { count.fetch_sub(1); }
  } prepared{preparing_};
  FrontendResult result;
  InferInput input;
  absl::Status prepare_status;
  try {
    prepare_status = Prepare(request, result, input);
  } catch (const std::exception& e) {  // bad_alloc on a huge input: refuse it, keep serving
    prepare_status = absl::ResourceExhaustedError(absl::StrCat("request too large: ", e.what()));
  }
  if (absl::Status s = prepare_status; !s.ok()) {
    Finish(request, std::move(s), std::move(result), done);
    return;
  }
  std::shared_ptr<Variant> variant = result.variant;
  // A sampled request is copied for the shadow reference before its images move into the queue.
  const RoutingTable& table = *result.table;
  std::vector<float> shadow_images;
  if (table.shadow_reference() && table.shadow_reference() != variant &&
      Uniform01() < table.shadow().fraction) {
    shadow_images = input.images;
  }
  const int num_images = input.num_images;
  // The callback owns what it needs: the request's metric labels and the partial result.
  auto on_done = [this, request = std::move(request), result = std::move(result), done,
                  shadow_images = std::move(shadow_images),
                  num_images](absl::Status status, InferOutput output) mutable {
    result.output = std::move(output);
    const bool shadow = status.ok() && !shadow_images.empty();
    std::vector<float> logits = shadow ? result.output.logits : std::vector<float>();
    std::shared_ptr<const RoutingTable> table = result.table;
    std::shared_ptr<Variant> answered = result.variant;
    Finish(request, std::move(status), std::move(result), done);  // the response goes first
    if (shadow) {
      Shadow(table, std::move(answered), num_images, std::move(shadow_images), std::move(logits));
    }
  };
  auto shared_done = std::make_shared<decltype(on_done)>(std::move(on_done));
  absl::Status accepted =
      variant->Submit(std::move(input), [shared_done](absl::Status s, InferOutput out) {
        (*shared_done)(std::move(s), std::move(out));
      });
  if (!accepted.ok()) (*shared_done)(std::move(accepted), InferOutput{});
}

absl::Status Frontend::Prepare(FrontendRequest& request, FrontendResult& result,
                               InferInput& input) {
  if (draining_) return absl::UnavailableError("the server is shutting down");
  if (request.model.empty()) return absl::InvalidArgumentError("no model given");
  absl::StatusOr<Routed> routed =
      repository_->Route(request.model, request.variant, request.routing_key);
  if (!routed.ok()) return routed.status();
  result.variant = routed->variant;
  result.routing_generation = routed->routing_generation;
  result.table = routed->table;
  const Variant& variant = *result.variant;
  if (request.priority < 0 || request.priority >= variant.priority_levels()) {
    return absl::InvalidArgumentError(
        absl::StrCat("priority ", request.priority, " is out of range: this model has ",
                     variant.priority_levels(), " level(s), 0 = highest"));
  }
  if (request.timeout_us < 0) return absl::InvalidArgumentError("timeout must be >= 0");
  if (absl::Status s = Preprocess(request, variant, input, result.preprocess_us); !s.ok()) return s;
  result.num_images = input.num_images;
  if (!request.labels.empty()) {
    absl::StatusOr<std::vector<int64_t>> truth =
        ParseLabels(request.labels, variant.class_names(), variant.num_classes(), input.num_images);
    if (!truth.ok()) return truth.status();
    result.true_classes = std::move(*truth);
  }
  input.deadline_us = DeadlineMicros(request);
  input.priority = request.priority;
  input.is_cancelled = request.is_cancelled;
  return absl::OkStatus();
}

absl::Status Frontend::Preprocess(FrontendRequest& request, const Variant& variant,
                                  InferInput& input, int64_t& preprocess_us) {
  const bool has_images = !request.encoded_images.empty();
  if (has_images == !request.tensor_shape.empty()) {
    return absl::InvalidArgumentError("give exactly one input: encoded images or a tensor");
  }
  if (!has_images) {
    absl::StatusOr<int> n = TensorImages(request.tensor_shape, request.tensor.size(), variant);
    if (!n.ok()) return n.status();
    for (float v : request.tensor) {
      if (!std::isfinite(v)) return absl::InvalidArgumentError("the tensor holds NaN or infinity");
    }
    input.num_images = *n;
    input.images = std::move(request.tensor);
    return absl::OkStatus();
  }
  const int64_t n = static_cast<int64_t>(request.encoded_images.size());
  if (n > variant.max_batch_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        n, " images in one request; this model takes 1 to ", variant.max_batch_size()));
  }
  const auto start = std::chrono::steady_clock::now();
  input.num_images = static_cast<int>(n);
  input.images.resize(n * variant.image_elements());
  std::vector<float> chw;
  for (int64_t i = 0; i < n; ++i) {
    absl::Status s =
        preprocessing::PreprocessImage(request.encoded_images[i], variant.preprocess(), chw);
    if (!s.ok()) {
      return absl::InvalidArgumentError(n == 1 ? std::string(s.message())
                                               : absl::StrCat("image ", i, ": ", s.message()));
    }
    if (static_cast<int64_t>(chw.size()) != variant.image_elements()) {
      return absl::InternalError("preprocessing produced an image of the wrong size");
    }
    std::copy(chw.begin(), chw.end(), input.images.begin() + i * variant.image_elements());
  }
  preprocess_us = MicrosBetween(start, std::chrono::steady_clock::now());
  if (metrics_) metrics_->OnPreprocess(variant.model_name(), preprocess_us * 1e-6);
  return absl::OkStatus();
}

bool Frontend::AwaitPrepared(std::chrono::steady_clock::time_point deadline) const {
  while (preparing_.load() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

void Frontend::CountRejected(const FrontendRequest& request, const absl::Status& status) {
  Finish(request, status, FrontendResult{}, [](absl::Status, FrontendResult) {});
}

void Frontend::Finish(const FrontendRequest& request, absl::Status status, FrontendResult result,
                      const FrontendCallback& done) {
  result.total_us = MicrosBetween(request.arrival, std::chrono::steady_clock::now());
  if (result.variant) {
    result.variant->stats().OnRequest(status.ok(), result.total_us, Clock::Real()->NowMicros());
    try {
      if (status.ok()) Account(request, result);
    } catch (const std::exception& e) {  // bookkeeping must never cost the answer
      std::fprintf(stderr, "vitq-server: accounting a request failed: %s\n", e.what());
    }
  }
  if (metrics_) {
    // Unknown model names are not labels: a client must not be able to create series at will.
    const bool known = repository_->Find(request.model) != nullptr;
    metrics_->OnRequest(request.api, known ? request.model : "",
                        result.variant ? result.variant->name() : "", status.code(),
                        result.total_us * 1e-6);
  }
  done(std::move(status), std::move(result));
}

void Frontend::Account(const FrontendRequest& request, const FrontendResult& result) {
  const Variant& variant = *result.variant;
  const int64_t classes = variant.num_classes();
  std::vector<int64_t> top1;
  for (int i = 0; i < result.num_images; ++i) {
    if (static_cast<int64_t>(result.output.logits.size()) < (i + 1) * classes) break;
    top1.push_back(ArgMax(result.output.logits.data() + i * classes, classes));
  }
  for (size_t i = 0; i < result.true_classes.size() && i < top1.size(); ++i) {
    CountLabeled(variant, top1[i] == result.true_classes[i]);
  }
  // Already labeled requests need no Feedback.
  if (request.request_id.empty() || !result.true_classes.empty()) return;
  feedback_.Remember(
      request.request_id,
      {variant.model_name(), variant.name(), result.variant, std::move(top1), classes},
      Clock::Real()->NowMicros());
}

absl::StatusOr<FeedbackOutcome> Frontend::Feedback(const std::string& request_id,
                                                   const std::string& labels) {
  if (request_id.empty()) return absl::InvalidArgumentError("request_id is required");
  if (labels.empty()) return absl::InvalidArgumentError("label is required");
  const int64_t now_us = Clock::Real()->NowMicros();
  std::optional<AnsweredRequest> answer = feedback_.Take(request_id, now_us);
  if (!answer) {
    return absl::NotFoundError(absl::StrCat(
        "no answered request '", request_id,
        "' to label: unknown, already labeled, or too old (the server keeps the last 100000 "
        "for up to 1 hour)"));
  }
  std::shared_ptr<Variant> variant = answer->variant.lock();
  std::vector<std::string> class_names;
  if (variant) {
    class_names = variant->class_names();
  } else if (absl::StatusOr<Routed> any = repository_->Route(answer->model, "", ""); any.ok()) {
    class_names = any->variant->class_names();  // the model's labels, from a variant still loaded
  }
  absl::StatusOr<std::vector<int64_t>> truth =
      ParseLabels(labels, class_names, answer->num_classes, answer->top1.size());
  if (!truth.ok()) {
    feedback_.Remember(request_id, *answer, now_us);  // a typo must not lose the request
    return truth.status();
  }
  FeedbackOutcome outcome{answer->model, answer->variant_name, true};
  for (size_t i = 0; i < truth->size(); ++i) {
    const bool correct = answer->top1[i] == (*truth)[i];
    outcome.correct = outcome.correct && correct;
    if (variant) CountLabeled(*variant, correct);
  }
  return outcome;
}

void Frontend::Shadow(const std::shared_ptr<const RoutingTable>& table,
                      std::shared_ptr<Variant> compared, int num_images, std::vector<float> images,
                      std::vector<float> logits) {
  const std::shared_ptr<Variant>& reference = table->shadow_reference();
  // Shadow copies are dropped first under load: they never wait behind more than one batch of
  // real requests, go to the reference's lowest priority level, and run on the engine thread
  // only when no real work waits there.
  if (draining_ || reference->queue_depth() >= reference->max_batch_size()) {
    CountShadowDropped(*compared);
    return;
  }
  InferInput input;
  input.num_images = num_images;
  input.images = std::move(images);
  input.priority = reference->priority_levels() - 1;
  input.background = true;
  input.deadline_us = Clock::Real()->NowMicros() + kShadowTimeoutUs;
  const int64_t classes = reference->num_classes();
  absl::Status accepted = reference->Submit(
      std::move(input),
      [compared, logits = std::move(logits), classes](absl::Status status, InferOutput output) {
        if (!status.ok()) {
          CountShadowDropped(*compared);
          return;
        }
        CompareWithReference(*compared, logits, output.logits, classes);
      });
  if (!accepted.ok()) CountShadowDropped(*compared);
}

}  // namespace vitq::server
