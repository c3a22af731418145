#include "quant/liu2021.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "backends/quantize.h"
#include "oneapi/dnnl/dnnl.h"

namespace vitq::quant::liu2021 {
namespace {

// c (m, n) = a (m, k) · b (n, k)ᵀ on oneDNN's sgemm (the search runs it for every candidate).
void MatmulTransposed(const float* a, const float* b, int64_t m, int64_t n, int64_t k, float* c) {
  if (m == 0 || n == 0) return;
  dnnl_sgemm('N', 'T', m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
}

// c (m, n) = a (m, k) · b (k, n).
void Matmul(const float* a, const float* b, int64_t m, int64_t n, int64_t k, float* c) {
  if (m == 0 || n == 0) return;
  dnnl_sgemm('N', 'N', m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
}

int Sign(double v) { return (v > 0) - (v < 0); }

double PairLoss(std::span<const float> r, std::span<const float> q, int64_t i, int64_t j,
                double theta) {
  const int s = Sign(static_cast<double>(r[i]) - r[j]);
  if (s == 0) return 0;
  return std::max(0.0, theta - (static_cast<double>(q[i]) - q[j]) * s);
}

// The grid point of `candidates` on [alpha·center, beta·center] maximizing f.
std::pair<double, double> GridMax(const std::function<double(double)>& f, double center,
                                  const SearchOptions& o) {
  double best_x = center, best_f = -std::numeric_limits<double>::infinity();
  for (int c = 0; c < o.candidates; ++c) {
    const double t = o.candidates == 1 ? 0.5 : static_cast<double>(c) / (o.candidates - 1);
    const double x = center * (o.alpha + t * (o.beta - o.alpha));
    const double v = f(x);
    if (v > best_f) {
      best_f = v;
      best_x = x;
    }
  }
  return {best_x, best_f};
}

}  // namespace

double Pearson(std::span<const float> a, std::span<const float> b) {
  const size_t n = std::min(a.size(), b.size());
  if (n == 0) return 0;
  double ma = 0, mb = 0;
  for (size_t i = 0; i < n; ++i) {
    ma += a[i];
    mb += b[i];
  }
  ma /= n;
  mb /= n;
  double cov = 0, va = 0, vb = 0;
  for (size_t i = 0; i < n; ++i) {
    const double da = a[i] - ma, db = b[i] - mb;
    cov += da * db;
    va += da * da;
    vb += db * db;
  }
  if (va == 0 || vb == 0) return 0;
  return cov / std::sqrt(va * vb);
}

double RankingLoss(std::span<const float> reference, std::span<const float> quantized,
                   int64_t row_len, double theta, int64_t max_pairs_per_row, uint64_t seed) {
  if (row_len < 2) return 0;
  const int64_t rows = static_cast<int64_t>(reference.size()) / row_len;
  const int64_t all_pairs = row_len * (row_len - 1) / 2;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, row_len - 1);
  double loss = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const auto ref = reference.subspan(r * row_len, row_len);
    const auto q = quantized.subspan(r * row_len, row_len);
    if (all_pairs <= max_pairs_per_row) {
      for (int64_t i = 0; i < row_len; ++i)
        for (int64_t j = i + 1; j < row_len; ++j) loss += PairLoss(ref, q, i, j, theta);
      continue;
    }
    for (int64_t p = 0; p < max_pairs_per_row; ++p) {
      int64_t i = pick(rng), j = pick(rng);
      while (j == i) j = pick(rng);
      loss += PairLoss(ref, q, std::min(i, j), std::max(i, j), theta);
    }
  }
  return loss;
}

void FakeQuantize(std::span<const float> x, float step, int bits, std::span<float> out) {
  const float lo = -static_cast<float>(1 << (bits - 1)),
              hi = static_cast<float>((1 << (bits - 1)) - 1);
  for (size_t i = 0; i < x.size(); ++i) {
    out[i] = std::clamp(std::nearbyint(x[i] / step), lo, hi) * step;
  }
}

SearchResult AlternatingSearch(const std::function<double(double, double)>& objective,
                               double weight_step0, double act_step0, const SearchOptions& o) {
  SearchResult r{weight_step0, act_step0, objective(weight_step0, act_step0), 0, {}};
  for (int round = 0; round < o.max_rounds; ++round) {
    const double before = r.objective;
    // Candidates are centred on the initial (max-based) steps, as in the paper.
    auto [dw, fw] = GridMax([&](double w) { return objective(w, r.act_step); }, weight_step0, o);
    if (fw > r.objective) {
      r.weight_step = dw;
      r.objective = fw;
    }
    auto [dx, fx] = GridMax([&](double x) { return objective(r.weight_step, x); }, act_step0, o);
    if (fx > r.objective) {
      r.act_step = dx;
      r.objective = fx;
    }
    r.rounds = round + 1;
    r.history.push_back(r.objective);
    if (!(r.objective > before)) break;
  }
  return r;
}

std::vector<float> QuantizedOutput(const LinearLayer& l, float weight_step, int weight_bits,
                                   float act_step, int act_bits) {
  std::vector<float> x(l.x.begin(), l.x.end()), w(l.w.begin(), l.w.end());
  if (act_step > 0) FakeQuantize(l.x, act_step, act_bits, x);
  if (weight_step > 0) FakeQuantize(l.w, weight_step, weight_bits, w);
  std::vector<float> y(static_cast<size_t>(l.m * l.n));
  MatmulTransposed(x.data(), w.data(), l.m, l.n, l.k, y.data());
  if (!l.bias.empty()) {
    for (int64_t i = 0; i < l.m; ++i)
      for (int64_t o = 0; o < l.n; ++o) y[i * l.n + o] += l.bias[o];
  }
  return y;
}

double InitialStep(std::span<const float> values, int bits) {
  float m = 0;
  for (float v : values) m = std::max(m, std::fabs(v));
  return m > 0 ? m / ((1 << (bits - 1)) - 1) : 1.0;
}

std::vector<float> MeanOutputError(std::span<const float> reference,
                                   std::span<const float> quantized, int64_t m, int64_t n) {
  std::vector<double> sum(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t o = 0; o < n; ++o)
      sum[o] += static_cast<double>(quantized[i * n + o]) - reference[i * n + o];
  std::vector<float> mean(static_cast<size_t>(n));
  for (int64_t o = 0; o < n; ++o) mean[o] = m > 0 ? static_cast<float>(sum[o] / m) : 0.0f;
  return mean;
}

absl::StatusOr<std::vector<int>> PickBits(const std::vector<Block>& blocks, int64_t budget_bits) {
  constexpr int64_t kBuckets = 4096;
  const double unit = std::max<double>(1.0, static_cast<double>(budget_bits) / kBuckets);
  const int64_t capacity = static_cast<int64_t>(budget_bits / unit);
  constexpr double kInf = std::numeric_limits<double>::infinity();
  // best[b][s]: least Ω of blocks [0, b) using at most s size units; choice for backtracking.
  std::vector<std::vector<double>> best(blocks.size() + 1, std::vector<double>(capacity + 1, kInf));
  std::vector<std::vector<int>> choice(blocks.size(), std::vector<int>(capacity + 1, -1));
  std::fill(best[0].begin(), best[0].end(), 0.0);
  for (size_t b = 0; b < blocks.size(); ++b) {
    const Block& blk = blocks[b];
    if (blk.bits.empty() || blk.bits.size() != blk.error.size()) {
      return absl::InvalidArgumentError(absl::StrCat("block ", b, ": bits and errors differ"));
    }
    for (int64_t s = 0; s <= capacity; ++s) {
      for (size_t c = 0; c < blk.bits.size(); ++c) {
        // Rounded up, so that the sum of rounded sizes bounds the true size.
        const auto units = static_cast<int64_t>(std::ceil(blk.parameters * blk.bits[c] / unit));
        if (units > s || best[b][s - units] == kInf) continue;
        const double omega = best[b][s - units] + blk.sensitivity * blk.error[c];
        if (omega < best[b + 1][s]) {
          best[b + 1][s] = omega;
          choice[b][s] = static_cast<int>(c);
        }
      }
    }
  }
  if (best[blocks.size()][capacity] == kInf) {
    return absl::InvalidArgumentError(
        absl::StrCat("no bit assignment fits in ", budget_bits, " bits"));
  }
  std::vector<int> picked(blocks.size());
  int64_t s = capacity;
  for (size_t b = blocks.size(); b-- > 0;) {
    const int c = choice[b][s];
    picked[b] = c;
    s -= static_cast<int64_t>(std::ceil(blocks[b].parameters * blocks[b].bits[c] / unit));
  }
  return picked;
}

namespace {

std::vector<float> SymmetricCopy(std::span<const float> x, float step, int bits) {
  std::vector<float> out(x.begin(), x.end());
  if (step > 0) FakeQuantSymmetric(out.data(), static_cast<int64_t>(out.size()), step, bits);
  return out;
}

float MaxAbsStep(std::span<const float> x, int bits) {
  float m = 0;
  for (float v : x) m = std::max(m, std::fabs(v));
  return m > 0 ? m / static_cast<float>((1 << (bits - 1)) - 1) : 1.0f;
}

}  // namespace

std::vector<float> SoftmaxRows(std::span<const float> scores, int64_t row_len) {
  std::vector<float> probs(scores.begin(), scores.end());
  for (size_t begin = 0; begin + row_len <= probs.size(); begin += row_len) {
    float* p = &probs[begin];
    const float mx = *std::max_element(p, p + row_len);
    float sum = 0;
    for (int64_t j = 0; j < row_len; ++j) sum += (p[j] = std::exp(p[j] - mx));
    for (int64_t j = 0; j < row_len; ++j) p[j] /= sum;
  }
  return probs;
}

std::vector<float> AttentionScores(const AttentionOperands& a, float q_step, float k_step,
                                   int bits) {
  const std::vector<float> q = SymmetricCopy(a.q, q_step, bits),
                           k = SymmetricCopy(a.k, k_step, bits);
  const int64_t n = a.tokens, d = a.d;
  std::vector<float> scores(static_cast<size_t>(a.count * n * n));
  for (int64_t m = 0; m < a.count; ++m)
    MatmulTransposed(&q[m * n * d], &k[m * n * d], n, n, d, &scores[m * n * n]);
  if (!a.bias.empty()) {
    for (size_t e = 0; e < scores.size(); ++e) scores[e] += a.bias[e];
  }
  return scores;
}

std::vector<float> AttentionOutput(const AttentionOperands& a, std::span<const float> scores,
                                   float probs_step, int probs_bits, float v_step, int bits) {
  const int64_t n = a.tokens, d = a.d;
  const std::vector<float> v = SymmetricCopy(a.v, v_step, bits);
  ActQuant pq;
  pq.bits = probs_bits;
  pq.scale = probs_step;
  pq.zero_point = 0;
  std::vector<float> probs = SoftmaxRows(scores, n);
  if (probs_step > 0)
    FakeQuantActivations(probs.data(), static_cast<int64_t>(probs.size()), pq, probs.data());
  std::vector<float> out(static_cast<size_t>(a.count * n * d));
  for (int64_t m = 0; m < a.count; ++m)
    Matmul(&probs[m * n * n], &v[m * n * d], n, d, n, &out[m * n * d]);
  return out;
}

AttentionChoice SearchAttention(const AttentionOperands& a, int qkv_bits, int probs_bits,
                                const AttentionSearchOptions& o) {
  const float q0 = MaxAbsStep(a.q, qkv_bits), k0 = MaxAbsStep(a.k, qkv_bits),
              v0 = MaxAbsStep(a.v, qkv_bits);
  const float p0 = 1.0f / static_cast<float>((1 << probs_bits) - 1);
  const std::vector<float> ref_scores = AttentionScores(a, 0, 0, qkv_bits);
  const int64_t pairs_per_row = std::min<int64_t>(o.pairs_per_row, a.tokens * (a.tokens - 1) / 2);
  const double pair_count = std::max<double>(
      1.0, static_cast<double>(a.count * a.tokens) * static_cast<double>(pairs_per_row));
  auto scores_objective = [&](double q_mult, double k_mult) {
    const std::vector<float> s = AttentionScores(a, static_cast<float>(q_mult * q0),
                                                 static_cast<float>(k_mult * k0), qkv_bits);
    double objective = Pearson(ref_scores, s);
    if (o.ranking) {
      objective -= o.gamma *
                   RankingLoss(ref_scores, s, a.tokens, o.theta, o.pairs_per_row,
                               /*seed=*/7) /
                   pair_count;
    }
    return objective;
  };
  AttentionChoice c;
  const SearchResult qk = AlternatingSearch(scores_objective, 1.0, 1.0, o.search);
  c.q_step = static_cast<float>(qk.weight_step * q0);
  c.k_step = static_cast<float>(qk.act_step * k0);
  c.scores_objective = qk.objective;
  c.scores_baseline = scores_objective(1.0, 1.0);
  const std::vector<float> scores = AttentionScores(a, c.q_step, c.k_step, qkv_bits);
  const std::vector<float> ref_out = AttentionOutput(a, ref_scores, 0, probs_bits, 0, qkv_bits);
  auto output_similarity = [&](double p_mult, double v_mult) {
    return Pearson(ref_out, AttentionOutput(a, scores, static_cast<float>(p_mult * p0), probs_bits,
                                            static_cast<float>(v_mult * v0), qkv_bits));
  };
  const SearchResult pv = AlternatingSearch(output_similarity, 1.0, 1.0, o.search);
  c.probs_step = static_cast<float>(pv.weight_step * p0);
  c.v_step = static_cast<float>(pv.act_step * v0);
  c.output_similarity = pv.objective;
  c.output_baseline = output_similarity(1.0, 1.0);
  return c;
}

}  // namespace vitq::quant::liu2021
