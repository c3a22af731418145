#include "server/frontend.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

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
    const int64_t timeout_us = std::min<int64_t>(request.timeout_us, int64_t{365} * 86400 * 1000000);
    deadline_us = now_us - MicrosBetween(request.arrival, steady_now) + timeout_us;
  }
  if (request.grpc_deadline != std::chrono::system_clock::time_point::max()) {
    const int64_t left_us = std::min<int64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(request.grpc_deadline -
                                                              std::chrono::system_clock::now())
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
  if ((shape.size() != 3 && !batched) ||
      !std::equal(chw.begin(), chw.end(), shape.end() - 3)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor shape ", ShapeString(shape),
                                                   " does not fit the model: expected [N, ",
                                                   absl::StrJoin(chw, ", "), "]"));
  }
  const int64_t n = batched ? shape[0] : 1;
  if (n < 1 || n > variant.max_batch_size()) {
    return absl::InvalidArgumentError(absl::StrCat("batch of ", n, " images; this model takes 1 to ",
                                                   variant.max_batch_size(), " per request"));
  }
  if (static_cast<int64_t>(num_values) != n * variant.image_elements()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor shape ", ShapeString(shape), " needs ",
                                                   n * variant.image_elements(), " values, got ",
                                                   num_values));
  }
  return static_cast<int>(n);
}

}  // namespace

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
  // The callback owns what it needs: the request's metric labels and the partial result.
  auto on_done = [this, request = std::move(request), result = std::move(result),
                  done](absl::Status status, InferOutput output) mutable {
    result.output = std::move(output);
    Finish(request, std::move(status), std::move(result), done);
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
  const Variant& variant = *result.variant;
  if (request.priority < 0 || request.priority >= variant.priority_levels()) {
    return absl::InvalidArgumentError(absl::StrCat("priority ", request.priority,
                                                   " is out of range: this model has ",
                                                   variant.priority_levels(), " level(s), 0 = highest"));
  }
  if (request.timeout_us < 0) return absl::InvalidArgumentError("timeout must be >= 0");
  if (absl::Status s = Preprocess(request, variant, input, result.preprocess_us); !s.ok()) return s;
  result.num_images = input.num_images;
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
    return absl::InvalidArgumentError(absl::StrCat(n, " images in one request; this model takes 1 to ",
                                                   variant.max_batch_size()));
  }
  const auto start = std::chrono::steady_clock::now();
  input.num_images = static_cast<int>(n);
  input.images.resize(n * variant.image_elements());
  std::vector<float> chw;
  for (int64_t i = 0; i < n; ++i) {
    absl::Status s =
        preprocessing::PreprocessImage(request.encoded_images[i], variant.preprocess(), chw);
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          n == 1 ? std::string(s.message()) : absl::StrCat("image ", i, ": ", s.message()));
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
  if (metrics_) {
    // Unknown model names are not labels: a client must not be able to create series at will.
    const bool known = repository_->Find(request.model) != nullptr;
    metrics_->OnRequest(request.api, known ? request.model : "", result.variant ? result.variant->name() : "",
                        status.code(), result.total_us * 1e-6);
  }
  done(std::move(status), std::move(result));
}

}  // namespace vitq::server
