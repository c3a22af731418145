// Quantization-aware training building blocks (Q-ViT, Li et al. 2022): LSQ / LSQ+ quantizers
// with straight-through rounding, the Information Rectification Module and the
// Distribution-Guided Distillation loss.
//
// Every quantizer simulates exactly what the engine's integer kernels compute
// (docs/FORMAT.md, "Quantized artifacts"), so an exported model serves at the accuracy it had
// in training:
//   weights       symmetric per output channel, codes in [−Qp, Qp], Qp = 2^(b−1) − 1
//   layer inputs  asymmetric per tensor, codes in [0, 2^b − 1] with an integer zero point
//   q, k, v       symmetric per tensor, codes in [−Qp, Qp]
//   softmax out   unsigned, zero point 0, codes in [0, 2^b − 1]
// Rounding is half-to-even (torch::round), as the engine rounds.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace vitq::training {

// x in the forward pass, x·scale's gradient in the backward (LSQ's step-size gradient scale).
torch::Tensor GradScale(const torch::Tensor& x, double scale);
// round(x) forward, identity gradient (straight-through estimator).
torch::Tensor RoundPass(const torch::Tensor& x);

// clamp(round(x / s), lo − zp, hi − zp) · s in one fused pass, with the gradients of that
// composition of torch ops (round straight-through) to x, s and zp. s is (1) or one step per
// slice of x's dim 0; zp (1) holds an integer. min_max picks the clamp's autograd rule:
// false as torch::clamp (the gradient flows to x wherever lo − zp <= code <= hi − zp), true as
// minimum(maximum(code, lo − zp), hi − zp) with tensor edges (at a tie x and the edge share
// it; the edges' share goes to zp). float32 only.
torch::Tensor FakeQuantize(const torch::Tensor& x, const torch::Tensor& s, const torch::Tensor& zp,
                           int64_t lo, int64_t hi, bool min_max);

// LSQ weight quantizer (Esser et al. 2020): a learnable step per output channel, initialised to
// 2·mean|w|/√Qp of the channel, step gradient scaled by 1/√(K·Qp) (K weights per channel).
class WeightQuantizerImpl : public torch::nn::Module {
 public:
  WeightQuantizerImpl(const torch::Tensor& weight, int bits);
  torch::Tensor forward(const torch::Tensor& weight);  // fake-quantized weight, same shape
  // The integer codes (N, K) the forward pass uses, as int8, and their scales |step| (export).
  torch::Tensor Codes(const torch::Tensor& weight) const;
  torch::Tensor Scales() const;
  int bits() const { return bits_; }
  int64_t qmax() const { return (int64_t{1} << (bits_ - 1)) - 1; }

  torch::Tensor step;  // (N), > 0

 private:
  torch::Tensor StepShaped(const torch::Tensor& weight) const;  // (N, 1, ...) as the weight
  int bits_;
};
TORCH_MODULE(WeightQuantizer);

// Per-tensor activation quantizer with a learnable step, initialised from the first training
// batch it sees (until then the module is "uninitialised" and export refuses it).
//   kAsymmetric  LSQ+ (Bhalgat et al. 2020): a learnable offset, kept an integer zero point in
//                the forward pass (rounded with a straight-through gradient) because the
//                engine's u8 kernels need one; init covers the batch's [min, max] ∪ {0}.
//   kSigned      LSQ, symmetric (q, k, v); init 2·mean|x|/√Qp.
//   kUnsigned    LSQ on [0, ...) with zero point 0 (softmax output); init 2·mean|x|/√Qp.
class ActQuantizerImpl : public torch::nn::Module {
 public:
  enum class Mode { kAsymmetric, kSigned, kUnsigned };
  ActQuantizerImpl(int bits, Mode mode);
  torch::Tensor forward(const torch::Tensor& x);

  int bits() const { return bits_; }
  Mode mode() const { return mode_; }
  bool initialized() const { return initialized_.item<bool>(); }
  float Step() const;         // |step|: what the forward pass uses
  int32_t ZeroPoint() const;  // the integer zero point the forward pass uses (0 unless kAsymmetric)
  int64_t lowest() const;     // smallest code: −Qp (kSigned) or 0
  int64_t highest() const;    // largest code: Qp (kSigned) or 2^b − 1

  torch::Tensor step;        // (1)
  torch::Tensor zero_point;  // (1), continuous; kAsymmetric only (else fixed 0)

 private:
  void Initialize(const torch::Tensor& x);
  int bits_;
  Mode mode_;
  torch::Tensor initialized_;  // buffer: saved with checkpoints
};
TORCH_MODULE(ActQuantizer);

// Q-ViT's Information Rectification Module on q or k (B, heads, N, d), in one of two forms:
//
//   kAffine     the paper's per-channel map q̃ = (q − μ + β) / (γ·σ), μ and σ the channel
//               statistics, reparametrised as q̃ = μ + γ·(q − μ) + β·σ with learnable γ, β per
//               head and channel and μ, σ frozen from the first training batch. It starts as the
//               identity (γ = 1, β = 0), so training starts from the pretrained function, and
//               being affine per channel it folds exactly into the q/k rows of the qkv
//               projection at export: the served model pays nothing for it.
//   kLayerNorm  as the released code realises it: per token and head, normalise over the
//               head's channels to zero mean / unit variance, then a learnable per-channel
//               affine (initialised from the first batch: weight = the head's mean per-token
//               standard deviation, bias = each channel's mean). Changes the function at the
//               start; served by the engine's rectification step (artifact tensors
//               <block>.attn.{q,k}_norm.*).
enum class Irm { kNone, kAffine, kLayerNorm };

class RectifierImpl : public torch::nn::Module {
 public:
  RectifierImpl(int64_t heads, int64_t head_dim, Irm form = Irm::kLayerNorm, double eps = 1e-5);
  torch::Tensor forward(const torch::Tensor& x);
  // kLayerNorm: the normalisation alone, before the affine (zero mean, unit variance per token
  // and head).
  torch::Tensor Normalize(const torch::Tensor& x) const;
  Irm form() const { return form_; }
  double eps() const { return eps_; }
  // kAffine: the map as q̃ = scale·q + shift, each (heads, head_dim).
  torch::Tensor AffineScale() const;
  torch::Tensor AffineShift() const;

  torch::Tensor weight, bias;  // (heads, head_dim): γ, β (kAffine) or the LayerNorm affine
  torch::Tensor mean, std;     // (heads, head_dim), kAffine: frozen channel statistics

 private:
  void Initialize(const torch::Tensor& x);
  Irm form_;
  double eps_;
  torch::Tensor initialized_;
};
TORCH_MODULE(Rectifier);

// q and k of every attention layer of one forward pass, each (B', heads, N, d): what DGD
// compares. For Swin, B' counts windows, so similarities are taken over each window's tokens.
struct QkCapture {
  std::vector<torch::Tensor> q, k;
  void clear() {
    q.clear();
    k.clear();
  }
};

// Patch-similarity matrix of x (B, heads, N, d): G = x·xᵀ / ‖x·xᵀ‖_F per batch element and
// head (the paper's G = q̃q̃ᵀ / ‖q̃q̃ᵀ‖₂), (B, heads, N, N).
torch::Tensor PatchSimilarity(const torch::Tensor& x);

// Distribution-Guided Distillation: ‖G_T − G_S‖_F for G_q and G_k of every layer and head,
// summed over layers and heads (kSum: the paper's Σ_l Σ_h) or averaged over them (kMean: the
// same loss divided by 2·layers·heads, so that its size does not grow with the depth and width
// of the model), and averaged over the batch. Zero for identical captures.
enum class DgdReduction { kSum, kMean };
torch::Tensor DgdLoss(const QkCapture& student, const QkCapture& teacher,
                      DgdReduction reduction = DgdReduction::kSum);

}  // namespace vitq::training
