#include "training/quantizers.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/quantize.h"

namespace vitq::training {
namespace {

void CheckBits(int bits) {
  if (bits < 2 || bits > 8)
    throw std::invalid_argument("quantizer bits must be in [2, 8], got " + std::to_string(bits));
}

// Gradient descent may carry a step through zero; the quantizers use its magnitude (kept above
// a floor), so the exported positive scales describe exactly the trained function.
torch::Tensor StepMagnitude(const torch::Tensor& step) { return step.abs().clamp_min(1e-8); }

// ---- fused round-and-clamp -------------------------------------------------------------
//
// One pass forward and one backward over the tensor instead of the ~20 element-wise torch ops
// (and their autograd nodes) that x / s, RoundPass, the clamp and · s make: the quantizers were
// a third of a QAT step (bench/qat_bench). The gradients are those of that composition, ties
// included (FakeQuantTest checks them against it).

constexpr float kRoundLimit = 4194304.0f;  // 2^22: RoundHalfEven is exact up to here

// A value's clamped code and the shares of its gradient that reach x (`through`) and the low
// and high edges. Two clamp rules, as the torch ops the quantizers were written with:
//   clamp     torch::clamp(r, lo, hi): all of it to r where lo <= r <= hi;
//   min_max   minimum(maximum(r, lo), hi) with tensor edges: at a tie each side gets half.
struct CodeGrad {
  float code, through, at_lo, at_hi;
};

// Written without branches: on values clipped at random a branch mispredicts half the time
// (4× slower on the softmax output's quantizer).
inline CodeGrad ClampCode(float r, float lo, float hi, bool min_max) {
  if (!min_max) {
    const float inside = static_cast<float>((r >= lo) & (r <= hi));
    return {ClampValue(r, lo, hi), inside, 0.0f, 0.0f};
  }
  const float a = r < lo ? lo : r;  // written so that a NaN stays NaN, as torch's ops keep it
  // 1 above the edge, ½ on it, 0 below: (a > b) + (a >= b) halved.
  const float to_r = 0.5f * static_cast<float>(int{r > lo} + int{r >= lo});
  const float to_a = 0.5f * static_cast<float>(int{a < hi} + int{a <= hi});
  return {a > hi ? hi : a, to_a * to_r, to_a * (1 - to_r), 1 - to_a};
}

// round(v) for v = x / s.
inline float Code(float v) { return RoundHalfEven(ClampValue(v, -kRoundLimit, kRoundLimit)); }

// Gradient sums of one step (and edges) over a range of values.
struct EdgeSums {
  double step = 0, lo = 0, hi = 0;
};

struct ClampRule {
  float lo, hi;  // code edges, zero point included
  bool min_max;
};

EdgeSums BackwardRange(const float* x, const float* g, float* gx, int64_t begin, int64_t end,
                       float s, const ClampRule& rule) {
  EdgeSums sums;
  for (int64_t i = begin; i < end; ++i) {
    const float v = x[i] / s;
    const CodeGrad c = ClampCode(Code(v), rule.lo, rule.hi, rule.min_max);
    gx[i] = g[i] * c.through;
    // d(code·s)/ds: the code, minus the straight-through part of x/s's own derivative.
    sums.step += static_cast<double>(g[i]) * (c.code - c.through * v);
    sums.lo += static_cast<double>(g[i]) * c.at_lo;
    sums.hi += static_cast<double>(g[i]) * c.at_hi;
  }
  sums.lo *= s;
  sums.hi *= s;
  return sums;
}

// Calls fn(channel, begin, end) over [0, count) in parallel: per channel (count / channels values
// each) when there are several steps, else in ranges of kGrain values.
constexpr int64_t kGrain = 16384;
int64_t RangeCount(int64_t count) { return (count + kGrain - 1) / kGrain; }

template <typename Fn>
void ForEachRange(int64_t count, int64_t channels, const Fn& fn) {
  if (channels > 1) {
    const int64_t inner = count / channels;
    at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) fn(c, c * inner, (c + 1) * inner);
    });
    return;
  }
  at::parallel_for(0, RangeCount(count), 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) fn(0, r * kGrain, std::min(count, (r + 1) * kGrain));
  });
}

// out = clamp(round(x / s), lo − zp, hi − zp) · s with a straight-through round; s is (1) or
// one step per slice of dim 0 (weights' output channels); zp (1) shifts the edges.
class FakeQuantFunction : public torch::autograd::Function<FakeQuantFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& s, const torch::Tensor& zp, int64_t lo,
                               int64_t hi, bool min_max) {
    if (x.scalar_type() != torch::kFloat32)
      throw std::invalid_argument("fake quantization needs a float32 tensor");
    if (x.dim() == 0 || (s.numel() != 1 && s.numel() != x.size(0)) || zp.numel() != 1)
      throw std::invalid_argument(
          "fake quantization needs one step, or one per slice of dim 0, "
          "and one zero point");
    const torch::Tensor xc = x.contiguous(), sc = s.detach().contiguous();
    const ClampRule rule = Rule(zp, lo, hi, min_max);
    torch::Tensor out = torch::empty_like(xc);
    const float* in = xc.data_ptr<float>();
    const float* steps = sc.data_ptr<float>();
    float* o = out.data_ptr<float>();
    ForEachRange(xc.numel(), sc.numel(), [&](int64_t c, int64_t begin, int64_t end) {
      const float step = steps[c];
      for (int64_t i = begin; i < end; ++i)
        o[i] = ClampCode(Code(in[i] / step), rule.lo, rule.hi, rule.min_max).code * step;
    });
    ctx->save_for_backward({xc, sc, zp});
    ctx->saved_data["lo"] = lo;
    ctx->saved_data["hi"] = hi;
    ctx->saved_data["min_max"] = min_max;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &s = saved[1], &zp = saved[2];
    const ClampRule rule = Rule(zp, ctx->saved_data["lo"].toInt(), ctx->saved_data["hi"].toInt(),
                                ctx->saved_data["min_max"].toBool());
    const torch::Tensor g = grads[0].contiguous();
    torch::Tensor gx = torch::empty_like(x);
    const int64_t channels = s.numel();
    // One slot per range: a per-tensor step's ranges are summed in order afterwards, so the
    // result does not depend on which thread finished first.
    std::vector<EdgeSums> sums(channels == 1 ? RangeCount(x.numel()) : channels);
    ForEachRange(x.numel(), channels, [&](int64_t c, int64_t begin, int64_t end) {
      const int64_t slot = channels == 1 ? begin / kGrain : c;
      sums[slot] = BackwardRange(x.data_ptr<float>(), g.data_ptr<float>(), gx.data_ptr<float>(),
                                 begin, end, s.data_ptr<float>()[c], rule);
    });
    std::vector<double> step_grads(channels, 0.0);
    double edges = 0;
    for (size_t slot = 0; slot < sums.size(); ++slot) {
      step_grads[channels == 1 ? 0 : slot] += sums[slot].step;
      edges += sums[slot].lo + sums[slot].hi;
    }
    torch::Tensor gs =
        torch::from_blob(step_grads.data(), {channels}, torch::kFloat64).to(torch::kFloat32);
    // The edges are lo − zp and hi − zp.
    torch::Tensor gzp = ctx->needs_input_grad(2) ? torch::full_like(zp, -edges) : torch::Tensor();
    return {gx, gs.view_as(s), gzp, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }

 private:
  static ClampRule Rule(const torch::Tensor& zp, int64_t lo, int64_t hi, bool min_max) {
    const float z = zp.item<float>();
    return {static_cast<float>(lo) - z, static_cast<float>(hi) - z, min_max};
  }
};

}  // namespace

torch::Tensor FakeQuantize(const torch::Tensor& x, const torch::Tensor& s, const torch::Tensor& zp,
                           int64_t lo, int64_t hi, bool min_max) {
  return FakeQuantFunction::apply(x, s, zp, lo, hi, min_max);
}

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
      GradScale(StepMagnitude(step), 1.0 / std::sqrt(per_channel * static_cast<double>(qmax())));
  return FakeQuantize(weight, scaled, torch::zeros({1}), -qmax(), qmax(), /*min_max=*/false);
}

torch::Tensor WeightQuantizerImpl::Codes(const torch::Tensor& weight) const {
  torch::NoGradGuard no_grad;
  const double q = static_cast<double>(qmax());
  return torch::clamp((weight / StepShaped(weight)).round(), -q, q).flatten(1).to(torch::kInt8);
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
  if (mode_ != Mode::kAsymmetric)
    return FakeQuantize(x, s, torch::zeros({1}), lowest(), highest(), /*min_max=*/false);
  // codes clamp(round(x/s) + zp, 0, qmax) − zp, with zp an integer in [0, qmax]
  const torch::Tensor zp =
      torch::clamp(RoundPass(GradScale(zero_point, g)), 0.0, static_cast<double>(highest()));
  return FakeQuantize(x, s, zp, 0, highest(), /*min_max=*/true);
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

namespace {

// Σ_heads ‖Ĝ_T − Ĝ_S‖_F per batch element of one layer's q or k, Ĝ = xxᵀ/‖xxᵀ‖_F, as one
// autograd node with its backward written out. Composed of torch ops it made ~24 passes over
// the (B, heads, N, N) matrices and was a fifth of a Q-ViT step (bench/qat_bench); this makes
// ~8. With D = Ĝ_T − Ĝ_S and ℓ = ‖D‖_F:
//   ∂ℓ/∂Ĝ_S = −D/ℓ =: E,   ∂ℓ/∂G_S = (E − Ĝ_S·⟨Ĝ_S, E⟩)/‖G_S‖_F,   ∂ℓ/∂S = 2·(∂ℓ/∂G_S)·S
// (G_S is symmetric). At ℓ = 0 the gradient is 0, as torch's norm gives.
class SimilarityDistanceFunction : public torch::autograd::Function<SimilarityDistanceFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher) {
    const torch::Tensor s = student.contiguous();
    torch::Tensor g_s = torch::matmul(s, s.transpose(-2, -1));
    const torch::Tensor norm_s = FrobeniusNorm(g_s).clamp_min(1e-12);
    g_s.div_(norm_s);  // Ĝ_S
    torch::Tensor d = PatchSimilarity(teacher.detach()).sub_(g_s);
    const torch::Tensor distance = FrobeniusNorm(d).squeeze(-1).squeeze(-1);  // (B, heads)
    ctx->save_for_backward({s, g_s, norm_s, d, distance});
    return distance;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &s = saved[0], &g_s = saved[1], &norm_s = saved[2], &d = saved[3];
    const torch::Tensor& distance = saved[4];
    const torch::Tensor coef =
        torch::where(distance > 0, -grads[0] / distance, torch::zeros_like(distance))
            .unsqueeze(-1)
            .unsqueeze(-1);
    torch::Tensor e = d * coef;  // E
    // ⟨Ĝ_S, E⟩ per (b, head) as a batched dot product, without an (N, N) temporary.
    const int64_t n2 = g_s.size(-1) * g_s.size(-2);
    const torch::Tensor dot =
        torch::matmul(g_s.reshape({-1, 1, n2}), e.reshape({-1, n2, 1})).view(norm_s.sizes());
    e.addcmul_(g_s, dot, -1).div_(norm_s);  // ∂ℓ/∂G_S
    return {2 * torch::matmul(e, s), torch::Tensor()};
  }

 private:
  static torch::Tensor FrobeniusNorm(const torch::Tensor& g) {  // (B, heads, 1, 1)
    return g.flatten(2).norm(2, -1).unsqueeze(-1).unsqueeze(-1);
  }
};

}  // namespace

torch::Tensor DgdLoss(const QkCapture& student, const QkCapture& teacher, DgdReduction reduction) {
  if (student.q.size() != teacher.q.size() || student.k.size() != teacher.k.size())
    throw std::invalid_argument("DGD: student and teacher captured different layer counts");
  torch::Tensor total = torch::zeros({});
  int64_t terms = 0;
  auto add = [&](const torch::Tensor& s, const torch::Tensor& t) {
    if (!s.sizes().equals(t.sizes()))
      throw std::invalid_argument("DGD: student and teacher captures differ in shape");
    // Σ_heads ‖·‖_F, batch mean
    total = total + SimilarityDistanceFunction::apply(s, t).sum(1).mean();
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
