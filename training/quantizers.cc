#include "training/quantizers.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace vitq::training {
namespace {

void CheckBits(int bits) {
  if (bits < 2 || bits > 8)
    throw std::invalid_argument("quantizer bits must be in [2, 8], got " + std::to_string(bits));
}

// Gradient descent may carry a step through zero; the quantizers use its magnitude (kept above
// a floor), so the exported positive scales describe exactly the trained function.
torch::Tensor StepMagnitude(const torch::Tensor& step) { return step.abs().clamp_min(1e-8); }

}  // namespace

torch::Tensor GradScale(const torch::Tensor& x, double scale) {
  const torch::Tensor scaled = x * scale;
  return (x - scaled).detach() + scaled;
}

torch::Tensor RoundPass(const torch::Tensor& x) { return (x.round() - x).detach() + x; }

// ---- weights -------------------------------------------------------------------------

WeightQuantizerImpl::WeightQuantizerImpl(const torch::Tensor& weight, int bits) : bits_(bits) {
  CheckBits(bits);
  torch::NoGradGuard no_grad;
  const torch::Tensor mean_abs = weight.detach().abs().flatten(1).mean(1);
  step = register_parameter(
      "step", (2.0 * mean_abs / std::sqrt(static_cast<double>(qmax()))).clamp_min(1e-8));
}

torch::Tensor WeightQuantizerImpl::StepShaped(const torch::Tensor& weight) const {
  std::vector<int64_t> shape(weight.dim(), 1);
  shape[0] = weight.size(0);
  return StepMagnitude(step).view(shape);
}

torch::Tensor WeightQuantizerImpl::Scales() const {
  return StepMagnitude(step.detach()).contiguous();
}

torch::Tensor WeightQuantizerImpl::forward(const torch::Tensor& weight) {
  const double per_channel = static_cast<double>(weight.numel() / weight.size(0));
  const torch::Tensor scaled =
      GradScale(StepShaped(weight), 1.0 / std::sqrt(per_channel * static_cast<double>(qmax())));
  const double q = static_cast<double>(qmax());
  return torch::clamp(RoundPass(weight / scaled), -q, q) * scaled;
}

torch::Tensor WeightQuantizerImpl::Codes(const torch::Tensor& weight) const {
  torch::NoGradGuard no_grad;
  const double q = static_cast<double>(qmax());
  return torch::clamp((weight / StepShaped(weight)).round(), -q, q)
      .flatten(1)
      .to(torch::kInt8);
}

// ---- activations ---------------------------------------------------------------------

ActQuantizerImpl::ActQuantizerImpl(int bits, Mode mode) : bits_(bits), mode_(mode) {
  CheckBits(bits);
  step = register_parameter("step", torch::ones({1}));
  zero_point = register_parameter("zero_point", torch::zeros({1}),
                                  /*requires_grad=*/mode == Mode::kAsymmetric);
  initialized_ = register_buffer("initialized", torch::zeros({1}, torch::kBool));
}

int64_t ActQuantizerImpl::lowest() const {
  return mode_ == Mode::kSigned ? -((int64_t{1} << (bits_ - 1)) - 1) : 0;
}

int64_t ActQuantizerImpl::highest() const {
  return mode_ == Mode::kSigned ? (int64_t{1} << (bits_ - 1)) - 1 : (int64_t{1} << bits_) - 1;
}

float ActQuantizerImpl::Step() const { return StepMagnitude(step.detach()).item<float>(); }

int32_t ActQuantizerImpl::ZeroPoint() const {
  if (mode_ != Mode::kAsymmetric) return 0;
  const double zp = std::nearbyint(zero_point.item<double>());
  return static_cast<int32_t>(std::clamp(zp, 0.0, static_cast<double>(highest())));
}

void ActQuantizerImpl::Initialize(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  if (mode_ == Mode::kAsymmetric) {
    const double lo = std::min(0.0, x.min().item<double>());
    const double hi = std::max(0.0, x.max().item<double>());
    const double s = hi > lo ? (hi - lo) / static_cast<double>(highest()) : 1.0;
    step.fill_(s);
    zero_point.fill_(std::nearbyint(-lo / s));
  } else {
    const double s = 2.0 * x.abs().mean().item<double>() / std::sqrt(double(highest()));
    step.fill_(std::max(s, 1e-8));
  }
  initialized_.fill_(true);
}

torch::Tensor ActQuantizerImpl::forward(const torch::Tensor& x) {
  if (!initialized()) {
    if (!is_training())
      throw std::logic_error("activation quantizer used before a training batch initialised it");
    Initialize(x.detach());
  }
  const double per_sample = static_cast<double>(x.numel() / std::max<int64_t>(1, x.size(0)));
  const double g = 1.0 / std::sqrt(per_sample * static_cast<double>(highest()));
  const torch::Tensor s = GradScale(StepMagnitude(step), g);
  const torch::Tensor v = RoundPass(x / s);
  if (mode_ != Mode::kAsymmetric) {
    return torch::clamp(v, static_cast<double>(lowest()), static_cast<double>(highest())) * s;
  }
  // codes clamp(round(x/s) + zp, 0, qmax) − zp, with zp an integer in [0, qmax]
  const torch::Tensor zp =
      torch::clamp(RoundPass(GradScale(zero_point, g)), 0.0, static_cast<double>(highest()));
  return torch::minimum(torch::maximum(v, -zp), highest() - zp) * s;
}

// ---- IRM ------------------------------------------------------------------------------

RectifierImpl::RectifierImpl(int64_t heads, int64_t head_dim, Irm form, double eps)
    : form_(form), eps_(eps) {
  if (form == Irm::kNone) throw std::invalid_argument("Rectifier: form kNone has no module");
  weight = register_parameter("weight", torch::ones({heads, head_dim}));
  bias = register_parameter("bias", torch::zeros({heads, head_dim}));
  if (form == Irm::kAffine) {
    mean = register_buffer("mean", torch::zeros({heads, head_dim}));
    std = register_buffer("std", torch::ones({heads, head_dim}));
  }
  initialized_ = register_buffer("initialized", torch::zeros({1}, torch::kBool));
}

torch::Tensor RectifierImpl::Normalize(const torch::Tensor& x) const {
  return torch::layer_norm(x, {x.size(-1)}, {}, {}, eps_);
}

void RectifierImpl::Initialize(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  const std::vector<int64_t> batch_and_tokens{0, 2};
  if (form_ == Irm::kAffine) {  // γ = 1, β = 0 stay: the identity
    mean.copy_(x.mean(batch_and_tokens));
    std.copy_((x.var(batch_and_tokens, /*unbiased=*/false) + eps_).sqrt());
  } else {
    const int64_t heads = weight.size(0), d = weight.size(1);
    const torch::Tensor per_token_std = (x.var(-1, /*unbiased=*/false) + eps_).sqrt();  // (B,H,N)
    weight.copy_(per_token_std.mean(batch_and_tokens).unsqueeze(1).expand({heads, d}));
    bias.copy_(x.mean(batch_and_tokens));  // (H, d): the channel means
  }
  initialized_.fill_(true);
}

torch::Tensor RectifierImpl::AffineScale() const { return weight; }

torch::Tensor RectifierImpl::AffineShift() const { return mean * (1 - weight) + bias * std; }

torch::Tensor RectifierImpl::forward(const torch::Tensor& x) {
  if (!initialized_.item<bool>() && is_training()) Initialize(x);
  const int64_t heads = weight.size(0), d = weight.size(1);
  auto per_channel = [&](const torch::Tensor& t) { return t.view({1, heads, 1, d}); };
  if (form_ == Irm::kAffine) return x * per_channel(AffineScale()) + per_channel(AffineShift());
  return Normalize(x) * per_channel(weight) + per_channel(bias);
}

// ---- DGD ------------------------------------------------------------------------------

torch::Tensor PatchSimilarity(const torch::Tensor& x) {
  const torch::Tensor g = torch::matmul(x, x.transpose(-2, -1));
  const torch::Tensor norm = g.flatten(2).norm(2, -1).clamp_min(1e-12);  // ‖G‖_F per (b, head)
  return g / norm.unsqueeze(-1).unsqueeze(-1);
}

torch::Tensor DgdLoss(const QkCapture& student, const QkCapture& teacher,
                      DgdReduction reduction) {
  if (student.q.size() != teacher.q.size() || student.k.size() != teacher.k.size())
    throw std::invalid_argument("DGD: student and teacher captured different layer counts");
  torch::Tensor total = torch::zeros({});
  int64_t terms = 0;
  auto add = [&](const torch::Tensor& s, const torch::Tensor& t) {
    const torch::Tensor diff = PatchSimilarity(t.detach()) - PatchSimilarity(s);
    total = total + diff.flatten(2).norm(2, -1).sum(1).mean();  // Σ_heads ‖·‖_F, batch mean
    terms += s.size(1);
  };
  for (size_t l = 0; l < student.q.size(); ++l) {
    add(student.q[l], teacher.q[l]);
    add(student.k[l], teacher.k[l]);
  }
  if (reduction == DgdReduction::kMean && terms > 0) total = total / static_cast<double>(terms);
  return total;
}

}  // namespace vitq::training
