#include "training/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vitq::training {
namespace {

namespace F = torch::nn::functional;
using Clock = std::chrono::steady_clock;

// One training image: random crop of the zero-padded image, optional flip and erasing, written
// normalised into `dst` (H·W floats).
void AugmentInto(const uint8_t* src, int64_t h, int64_t w, const TrainOptions& o, float mean,
                 float std, std::mt19937_64& rng, float* dst) {
  std::uniform_int_distribution<int64_t> shift(-o.crop_padding, o.crop_padding);
  const int64_t dy = shift(rng), dx = shift(rng);
  const bool flip = o.hflip && (rng() & 1);
  const float zero = (0.0f - mean) / std;
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      const int64_t sy = y + dy, sx = (flip ? w - 1 - x : x) + dx;
      dst[y * w + x] = (sy >= 0 && sy < h && sx >= 0 && sx < w)
                           ? (src[sy * w + sx] / 255.0f - mean) / std
                           : zero;
    }
  }
  std::uniform_real_distribution<double> u(0.0, 1.0);
  if (o.erase_prob <= 0 || u(rng) >= o.erase_prob) return;
  const double area = h * w * (0.02 + 0.18 * u(rng)),
               aspect = std::exp(std::log(0.3) + u(rng) * std::log(1 / 0.09));
  const int64_t eh = std::min<int64_t>(h, std::lround(std::sqrt(area * aspect)));
  const int64_t ew = std::min<int64_t>(w, std::lround(std::sqrt(area / aspect)));
  const int64_t y0 = static_cast<int64_t>(u(rng) * (h - eh + 1)),
                x0 = static_cast<int64_t>(u(rng) * (w - ew + 1));
  for (int64_t y = y0; y < y0 + eh; ++y) std::fill(dst + y * w + x0, dst + y * w + x0 + ew, 0.0f);
}

torch::Tensor AugmentedBatch(const data::LabeledImages& d, const int64_t* idx, int64_t n,
                             const TrainOptions& o, float mean, float std, std::mt19937_64& rng) {
  auto batch = torch::empty({n, 1, d.height, d.width});
  float* p = batch.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i)
    AugmentInto(d.image(idx[i]), d.height, d.width, o, mean, std, rng, p + i * d.height * d.width);
  return batch;
}

torch::Tensor Labels(const data::LabeledImages& d, const int64_t* idx, int64_t n) {
  auto t = torch::empty({n}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int64_t>(d.labels[idx[i]]);
  return t;
}

// No weight decay on biases, norms, tokens and position tables (as timm does), nor on
// quantizer steps and rectification parameters.
bool Decays(const std::string& name, const torch::Tensor& p) {
  return p.dim() >= 2 && name.find("token") == std::string::npos &&
         name.find("_quant.") == std::string::npos && name.find("_norm.") == std::string::npos &&
         name.find("pos_embed") == std::string::npos &&
         name.find("relative_position_bias_table") == std::string::npos;
}

std::unique_ptr<torch::optim::AdamW> MakeOptimizer(Classifier& model, const TrainOptions& o) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& kv : model.named_parameters())
    (Decays(kv.key(), kv.value()) ? decay : no_decay).push_back(kv.value());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(o.lr).weight_decay(0.0)));
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(o.lr));
}

double LearningRate(const TrainOptions& o, double epoch_progress) {
  if (epoch_progress < o.warmup_epochs) return o.lr * epoch_progress / o.warmup_epochs;
  const double t = (epoch_progress - o.warmup_epochs) / std::max(1e-9, o.epochs - o.warmup_epochs);
  return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + std::cos(M_PI * std::min(1.0, t)));
}

void SetLearningRate(torch::optim::AdamW& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
}

std::string FormatDuration(double seconds) {
  const int64_t s = std::llround(seconds);
  return absl::StrFormat("%02d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
}

struct Checkpoint {
  int epoch = 0;
  double wall_s = 0;
};

absl::Status SaveCheckpoint(Classifier& model, torch::optim::AdamW& opt, const Checkpoint& c,
                            const std::string& path) {
  try {
    torch::serialize::OutputArchive root, model_ar, opt_ar;
    model.save(model_ar);
    opt.save(opt_ar);
    root.write("model", model_ar);
    root.write("optimizer", opt_ar);
    root.write("epoch", torch::tensor(static_cast<int64_t>(c.epoch)));
    root.write("wall_s", torch::tensor(c.wall_s, torch::kDouble));
    root.save_to(path + ".tmp");
    std::filesystem::rename(path + ".tmp", path);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(path, ": cannot save checkpoint: ", e.what()));
  }
  return absl::OkStatus();
}

absl::StatusOr<Checkpoint> LoadCheckpoint(Classifier& model, torch::optim::AdamW& opt,
                                          const std::string& path) {
  Checkpoint c;
  try {
    torch::serialize::InputArchive root, model_ar, opt_ar;
    root.load_from(path);
    root.read("model", model_ar);
    root.read("optimizer", opt_ar);
    model.load(model_ar);
    opt.load(opt_ar);
    torch::Tensor epoch, wall;
    root.read("epoch", epoch);
    root.read("wall_s", wall);
    c.epoch = static_cast<int>(epoch.item<int64_t>());
    c.wall_s = wall.item<double>();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot resume: ", e.what()));
  }
  return c;
}

void Progress(const TrainOptions& o, int epoch, int64_t step, int64_t steps, double loss,
              double acc, double ips, double eta_s, bool tty) {
  const int width = 24, filled = static_cast<int>(width * step / steps);
  const std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
  const std::string line = absl::StrFormat(
      "%s epoch %d/%d [%s] %d/%d loss %.4f acc %.2f%% %.0f img/s ETA %s", o.log_prefix, epoch,
      o.epochs, bar, step, steps, loss, 100 * acc, ips, FormatDuration(eta_s));
  std::fprintf(stderr, tty ? "\r%s   " : "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace

torch::Tensor MakeBatch(const data::LabeledImages& d, const std::vector<int64_t>& indices,
                        float mean, float std) {
  auto batch = torch::empty({static_cast<int64_t>(indices.size()), 1, d.height, d.width});
  float* p = batch.data_ptr<float>();
  const int64_t hw = d.height * d.width;
  for (size_t i = 0; i < indices.size(); ++i) {
    const uint8_t* src = d.image(indices[i]);
    for (int64_t k = 0; k < hw; ++k) p[i * hw + k] = (src[k] / 255.0f - mean) / std;
  }
  return batch;
}

double Evaluate(Classifier& model, const data::LabeledImages& d, float mean, float std,
                int64_t batch_size) {
  torch::NoGradGuard no_grad;
  model.eval();
  int64_t correct = 0;
  for (int64_t begin = 0; begin < d.count; begin += batch_size) {
    std::vector<int64_t> idx(std::min(batch_size, d.count - begin));
    std::iota(idx.begin(), idx.end(), begin);
    auto pred = model.Forward(MakeBatch(d, idx, mean, std)).Inference().argmax(1);
    correct += pred.eq(Labels(d, idx.data(), idx.size())).sum().item<int64_t>();
  }
  model.train();
  return d.count ? static_cast<double>(correct) / d.count : 0.0;
}

absl::StatusOr<TrainResult> Train(Classifier& model, const data::LabeledImages& train,
                                  const data::LabeledImages& test, float mean, float std,
                                  const TrainOptions& o,
                                  std::function<torch::Tensor(const torch::Tensor&)> teacher) {
  // Class loss with label smoothing; with a distillation head, half of it on the teacher's
  // hard labels (DeiT's hard distillation), or on the true labels without a teacher.
  const StepLossFn step_loss = [&](const torch::Tensor& x, const torch::Tensor& y) {
    Logits out = model.Forward(x);
    torch::Tensor loss = F::cross_entropy(
        out.logits, y, F::CrossEntropyFuncOptions().label_smoothing(o.label_smoothing));
    if (out.dist.defined()) {
      torch::Tensor target = y;
      if (teacher) {
        torch::NoGradGuard no_grad;
        target = teacher(x).argmax(1);
      }
      loss = 0.5 * loss + 0.5 * F::cross_entropy(out.dist, target);
    }
    return StepOutput{loss, out};
  };
  return TrainWithLoss(model, train, test, mean, std, o, step_loss);
}

absl::StatusOr<TrainResult> TrainWithLoss(Classifier& model, const data::LabeledImages& train,
                                          const data::LabeledImages& test, float mean, float std,
                                          const TrainOptions& o, const StepLossFn& step_loss) {
  torch::set_num_threads(o.threads);
  torch::manual_seed(o.seed);
  std::filesystem::create_directories(o.out_dir);
  const std::string ckpt_path = o.out_dir + "/checkpoint.pt";
  auto opt = MakeOptimizer(model, o);
  Checkpoint state;
  if (o.resume && std::filesystem::exists(ckpt_path)) {
    auto loaded = LoadCheckpoint(model, *opt, ckpt_path);
    if (!loaded.ok()) return loaded.status();
    state = *loaded;
    std::fprintf(stderr, "%s resumed from %s after epoch %d\n", o.log_prefix.c_str(),
                 ckpt_path.c_str(), state.epoch);
  }
  std::ofstream log(o.out_dir + "/train.log", std::ios::app);
  const bool tty = ::isatty(2);
  int64_t steps = (train.count + o.batch_size - 1) / o.batch_size;
  if (o.max_steps_per_epoch > 0) steps = std::min(steps, o.max_steps_per_epoch);
  TrainResult result;
  model.train();
  const int last_epoch = o.max_epochs_this_run > 0
                             ? std::min(o.epochs, state.epoch + o.max_epochs_this_run)
                             : o.epochs;
  for (int epoch = state.epoch + 1; epoch <= last_epoch; ++epoch) {
    const auto t0 = Clock::now();
    std::mt19937_64 rng(o.seed * 1000003 + epoch);
    std::vector<int64_t> order(train.count);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    double loss_sum = 0, seen = 0, correct = 0;
    for (int64_t step = 0; step < steps; ++step) {
      const int64_t begin = step * o.batch_size, n = std::min(o.batch_size, train.count - begin);
      SetLearningRate(*opt, LearningRate(o, epoch - 1 + static_cast<double>(step) / steps));
      auto x = AugmentedBatch(train, order.data() + begin, n, o, mean, std, rng);
      auto y = Labels(train, order.data() + begin, n);
      auto [loss, out] = step_loss(x, y);
      opt->zero_grad();
      loss.backward();
      if (o.clip_grad_norm > 0)
        torch::nn::utils::clip_grad_norm_(model.parameters(), o.clip_grad_norm);
      opt->step();
      const double step_loss = loss.item<double>();
      result.step_losses.push_back(step_loss);
      loss_sum += step_loss * n;
      correct += out.Inference().argmax(1).eq(y).sum().item<int64_t>();
      seen += n;
      if (step % 20 == 19 || step == steps - 1) {
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        const double ips = seen / secs;
        const double eta =
            (steps - step - 1 + (o.epochs - epoch) * steps) * o.batch_size / ips;
        if (tty || step == steps - 1 || step % 100 == 99)
          Progress(o, epoch, step + 1, steps, loss_sum / seen, correct / seen, ips, eta, tty);
      }
    }
    if (tty) std::fprintf(stderr, "\n");
    const double test_acc = Evaluate(model, test, mean, std);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    state.epoch = epoch;
    state.wall_s += secs;
    const std::string line = absl::StrFormat(
        "epoch=%d train_loss=%.4f train_acc=%.4f test_top1=%.4f lr=%.2e epoch_s=%.0f wall_s=%.0f",
        epoch, loss_sum / seen, correct / seen, test_acc, LearningRate(o, epoch), secs,
        state.wall_s);
    std::fprintf(stderr, "%s %s\n", o.log_prefix.c_str(), line.c_str());
    log << line << std::endl;
    if (absl::Status s = SaveCheckpoint(model, *opt, state, ckpt_path); !s.ok()) return s;
    result.test_top1 = test_acc;
  }
  if (result.test_top1 == 0) result.test_top1 = Evaluate(model, test, mean, std);
  result.wall_time_s = state.wall_s;
  result.epochs_done = state.epoch;
  return result;
}

}  // namespace vitq::training
