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
  float Step() const;  // |step|: what the forward pass uses
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

// Q-ViT's Information Rectification Module, as the released code realises it: per token and
// head, normalise q (or k) over the head's channels to zero mean / unit variance, then a
// learnable per-head, per-channel affine. Input (B, heads, N, d).
// The affine is initialised from the first training batch (weight = the head's mean per-token
// standard deviation, bias = each channel's mean) so that the rectified distribution starts
// close to the pretrained one: q's large shared component (its channel means) is kept.
class RectifierImpl : public torch::nn::Module {
 public:
  RectifierImpl(int64_t heads, int64_t head_dim, double eps = 1e-5);
  torch::Tensor forward(const torch::Tensor& x);
  // The normalisation alone, before the affine (zero mean, unit variance per token and head).
  torch::Tensor Normalize(const torch::Tensor& x) const;
  double eps() const { return eps_; }

  torch::Tensor weight, bias;  // (heads, head_dim)

 private:
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

// Distribution-Guided Distillation: Σ_layers Σ_heads ‖G_T − G_S‖_F for G_q and G_k, averaged
// over the batch. Zero for identical captures.
torch::Tensor DgdLoss(const QkCapture& student, const QkCapture& teacher);

}  // namespace vitq::training
