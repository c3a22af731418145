// The building blocks of "Post-Training Quantization for Vision Transformer" (Liu et al.,
// NeurIPS 2021), independent of the model code so that each can be tested on its own:
//   * Pearson correlation, the similarity the scale search maximizes;
//   * the ranking loss that keeps the order of attention scores;
//   * the alternating (coordinate) search over Δ_W and Δ_X on linear grids [α·Δ0, β·Δ0];
//   * a linear layer's similarity under symmetric fake quantization, Ψ_Δ(Y) =
//     clip(round(Y/Δ), −2^(b−1), 2^(b−1)−1)·Δ;
//   * bias correction: the mean output error quantization causes, per output channel;
//   * the mixed-precision picker: per block a bit-width minimizing Ω = Σ σ_l·err_l under a
//     size budget.
// `vitq quantize --method liu2021` (issue 6) assembles them over a model.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace vitq::quant::liu2021 {

// Pearson correlation of a and b (same length); 0 when either is constant or empty.
double Pearson(std::span<const float> a, std::span<const float> b);

// Σ over pairs i<j of each row of `row_len` scores: max(0, θ − (q_i − q_j)·sign(r_i − r_j)),
// r = reference (full-precision) attention scores, q = quantized ones; pairs with r_i == r_j do
// not count. A row with more than `max_pairs_per_row` pairs uses that many pairs drawn uniformly
// with `seed` (the same pairs for every candidate of a search, so that losses compare).
double RankingLoss(std::span<const float> reference, std::span<const float> quantized,
                   int64_t row_len, double theta, int64_t max_pairs_per_row, uint64_t seed);

// Ψ_Δ: symmetric `bits`-bit fake quantization with step `step`.
void FakeQuantize(std::span<const float> x, float step, int bits, std::span<float> out);

struct SearchOptions {
  int candidates = 100;  // grid points per coordinate, on [alpha·Δ0, beta·Δ0]
  double alpha = 0.5;
  double beta = 1.2;
  int max_rounds = 20;  // alternations (Δ_W, then Δ_X); stops early when nothing improves
};

struct SearchResult {
  double weight_step = 0;
  double act_step = 0;
  double objective = 0;
  int rounds = 0;               // alternations run
  std::vector<double> history;  // objective after each round
};

// Maximizes objective(Δ_W, Δ_X) by alternating 1-D grid searches from (Δ_W0, Δ_X0): fix Δ_X,
// search Δ_W; fix Δ_W, search Δ_X; repeat until a round improves nothing or max_rounds.
SearchResult AlternatingSearch(const std::function<double(double, double)>& objective,
                               double weight_step0, double act_step0, const SearchOptions& options);

// A linear layer y = x·wᵀ + b on calibration rows.
struct LinearLayer {
  std::span<const float> x;     // (m, k) inputs
  std::span<const float> w;     // (n, k) weights
  std::span<const float> bias;  // (n) or empty
  int64_t m = 0, k = 0, n = 0;
};

// (m, n) outputs with x and w fake-quantized (a step of 0 leaves that operand in float).
std::vector<float> QuantizedOutput(const LinearLayer& layer, float weight_step, int weight_bits,
                                   float act_step, int act_bits);

// Max-based initial steps: max|w| / (2^(b−1) − 1), likewise for x.
double InitialStep(std::span<const float> values, int bits);

// Bias correction: per output channel, the mean over rows of (quantized − reference) outputs,
// both (m, n). Subtracting it from the bias removes the quantization's systematic error.
std::vector<float> MeanOutputError(std::span<const float> reference,
                                   std::span<const float> quantized, int64_t m, int64_t n);

// One attention layer's calibration operands: `count` per-head matrices q (already × 1/√d),
// k, v, each tokens × d, and (Swin) the additive bias of each, tokens × tokens, or empty.
struct AttentionOperands {
  std::span<const float> q, k, v, bias;
  int64_t count = 0, tokens = 0, d = 0;
};

// Scores q·kᵀ + bias per matrix, q and k quantized as the engine does (symmetric, codes
// [−Qp, Qp], step 0: float): (count, tokens, tokens).
std::vector<float> AttentionScores(const AttentionOperands& a, float q_step, float k_step,
                                   int bits);
// Softmax of each row of `row_len` values.
std::vector<float> SoftmaxRows(std::span<const float> scores, int64_t row_len);
// softmax(scores)·v per matrix with the probabilities quantized unsigned (zero point 0) with
// `probs_step` and v symmetric with `v_step` (0: float): (count, tokens, d).
std::vector<float> AttentionOutput(const AttentionOperands& a, std::span<const float> scores,
                                   float probs_step, int probs_bits, float v_step, int bits);

struct AttentionSearchOptions {
  SearchOptions search;
  bool ranking = true;         // the ranking loss on the attention scores (--no-ranking: off)
  double gamma = 0.1;          // its weight
  double theta = 0.2;          // its margin
  int64_t pairs_per_row = 64;  // sampled pairs per score row
};

struct AttentionChoice {
  float q_step = 0, k_step = 0, v_step = 0, probs_step = 0;
  double scores_objective = 0, scores_baseline = 0;  // Pearson − γ·ranking, searched / max-based
  double output_similarity = 0, output_baseline = 0;
};

// Liu et al.'s search for the two attention matmuls: first Δ_q and Δ_k maximizing the Pearson
// correlation of the scores with the float ones minus γ times the mean ranking hinge; then, on
// those quantized scores, Δ_probs and Δ_v maximizing the output's Pearson correlation. Each
// alternating over [alpha, beta]× the max-based steps (probabilities: 1/(2^b − 1)).
AttentionChoice SearchAttention(const AttentionOperands& a, int qkv_bits, int probs_bits,
                                const AttentionSearchOptions& options);

// One block (an attention block or an MLP block) for mixed precision.
struct Block {
  double sensitivity = 0;     // σ: nuclear norm of its attention map / output feature
  int64_t parameters = 0;     // weights it holds
  std::vector<int> bits;      // candidate bit-widths
  std::vector<double> error;  // ‖Ŷ − Y‖² at each candidate
};

// Per block the index of the chosen candidate minimizing Σ σ·error with Σ parameters·bits ≤
// budget_bits (exact dynamic programming over sizes rounded up to budget/4096, so the budget
// always holds). INVALID_ARGUMENT when even the smallest bits exceed the budget.
absl::StatusOr<std::vector<int>> PickBits(const std::vector<Block>& blocks, int64_t budget_bits);

}  // namespace vitq::quant::liu2021
