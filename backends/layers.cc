#include "backends/layers.h"

#include <vector>

#include "backends/ops.h"
#include "backends/status_macros.h"

namespace vitq {

absl::StatusOr<LayerNorm> LayerNorm::Create(WeightStore& store, const std::string& prefix,
                                            int64_t dim, float eps) {
  LayerNorm ln;
  VITQ_ASSIGN_OR_RETURN(auto gamma, store.Take(prefix + ".weight", {dim}));
  VITQ_ASSIGN_OR_RETURN(auto beta, store.Take(prefix + ".bias", {dim}));
  ln.gamma_ = std::move(gamma);
  ln.beta_ = std::move(beta);
  ln.eps_ = eps;
  return ln;
}

void LayerNorm::Forward(const float* x, float* y, int64_t rows, const RowGather* gather) const {
  if (gather) {
    LayerNormGatherRows(x, *gather, y, rows, dim(), gamma_.data(), beta_.data(), eps_);
  } else {
    LayerNormRows(x, y, rows, dim(), gamma_.data(), beta_.data(), eps_);
  }
}

void LayerNorm::ForwardToCodes(const float* x, int64_t rows, const ActQuant& grid, uint8_t* codes,
                               const RowGather* gather) const {
  if (gather) {
    LayerNormGatherRowsToCodes(x, *gather, codes, rows, dim(), gamma_.data(), beta_.data(), eps_,
                               grid);
  } else {
    LayerNormRowsToCodes(x, codes, rows, dim(), gamma_.data(), beta_.data(), eps_, grid);
  }
}

namespace {

// One per-thread buffer of each kind serves every LayerNorm's output (outside the template
// below, whose every instantiation would have its own).
std::vector<uint8_t>& NormedCodes() {
  thread_local std::vector<uint8_t> codes;
  return codes;
}
std::vector<float>& NormedFloats() {
  thread_local std::vector<float> normed;
  return normed;
}

// Hands norm(x) to the layer after it: as codes on `grid` (on_codes) when that layer reads codes,
// else as floats (on_floats). The callbacks must not hand over another norm (shared buffers).
template <class OnCodes, class OnFloats>
void WithNormed(const LayerNorm& norm, const float* x, int64_t rows, const RowGather* gather,
                const ActQuant* grid, OnCodes on_codes, OnFloats on_floats) {
  const size_t size = static_cast<size_t>(rows * norm.dim());
  if (grid) {
    std::vector<uint8_t>& codes = NormedCodes();
    codes.resize(size);
    norm.ForwardToCodes(x, rows, *grid, codes.data(), gather);
    on_codes(codes.data());
    return;
  }
  std::vector<float>& normed = NormedFloats();
  normed.resize(size);
  norm.Forward(x, normed.data(), rows, gather);
  on_floats(normed.data());
}

}  // namespace

void NormThenLinear(const LayerNorm& norm, const Linear& linear, const float* x, int64_t rows,
                    float* y, const RowGather* gather) {
  WithNormed(
      norm, x, rows, gather, linear.InputGrid(),
      [&](const uint8_t* codes) { linear.ForwardCodes(codes, rows, y, /*accumulate=*/false); },
      [&](const float* normed) { linear.Forward(normed, rows, y); });
}

void NormQkvAttention(const LayerNorm& norm, const Linear& qkv, const AttentionCore& attn,
                      const float* x, const RowGather* gather, int64_t groups, int64_t tokens,
                      const float* bias, int64_t bias_groups, float* out) {
  const int64_t rows = groups * tokens;
  const size_t size = static_cast<size_t>(rows * qkv.out_features());
  thread_local std::vector<float> qkv_out;
  auto attend_floats = [&](auto&& run_qkv) {
    qkv_out.resize(size);
    run_qkv(qkv_out.data());
    attn.Forward(qkv_out.data(), groups, tokens, bias, bias_groups, out);
  };
  WithNormed(
      norm, x, rows, gather, qkv.InputGrid(),
      [&](const uint8_t* codes) {
        if (attn.TakesCodes()) {
          thread_local std::vector<int8_t> qkv_codes;
          qkv_codes.resize(size);
          if (qkv.ForwardCodesToSymmetricCodes(codes, rows, attn.QkvCodeScales().data(),
                                               attn.qkv_bits(), qkv_codes.data())) {
            attn.ForwardCodes(qkv_codes.data(), groups, tokens, bias, bias_groups, out);
            return;
          }
        }
        attend_floats([&](float* y) { qkv.ForwardCodes(codes, rows, y, /*accumulate=*/false); });
      },
      [&](const float* normed) { attend_floats([&](float* y) { qkv.Forward(normed, rows, y); }); });
}

absl::StatusOr<Linear> LoadLinear(WeightStore& store, const std::string& prefix, int64_t in,
                                  int64_t out, bool has_bias, const PrecisionPlan& plan,
                                  Activation activation) {
  LinearParams params;
  VITQ_ASSIGN_OR_RETURN(auto weight, store.Take(prefix + ".weight", {out, in}));
  params.weight = std::move(weight);
  if (has_bias) {
    VITQ_ASSIGN_OR_RETURN(auto bias, store.Take(prefix + ".bias", {out}));
    params.bias = std::move(bias);
  }
  return Linear::Create(prefix, std::move(params), plan(prefix), activation);
}

absl::StatusOr<PatchEmbed> PatchEmbed::Create(WeightStore& store, const std::string& prefix,
                                              int64_t in_chans, int64_t patch, int64_t dim,
                                              const PrecisionPlan& plan) {
  PatchEmbed pe;
  pe.in_chans_ = in_chans;
  pe.patch_ = patch;
  VITQ_ASSIGN_OR_RETURN(auto weight, store.Take(prefix + ".weight", {dim, in_chans, patch, patch}));
  VITQ_ASSIGN_OR_RETURN(auto bias, store.Take(prefix + ".bias", {dim}));
  weight.Reshape({dim, in_chans * patch * patch});  // (E, C·p·p), the order im2col writes
  VITQ_ASSIGN_OR_RETURN(
      auto proj,
      Linear::Create(prefix, LinearParams{std::move(weight), std::move(bias)}, plan(prefix)));
  pe.proj_ = std::move(proj);
  return pe;
}

Tensor PatchEmbed::Forward(const Tensor& images) const {
  const int64_t b = images.dim(0), c = in_chans_, h = images.dim(2), w = images.dim(3), p = patch_;
  const int64_t gh = h / p, gw = w / p, k = c * p * p;
  Tensor cols({b * gh * gw, k});  // (B·gh·gw, C·p·p)
  const float* src = images.data();
  float* dst = cols.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < b; ++n) {
    for (int64_t py = 0; py < gh; ++py) {
      for (int64_t px = 0; px < gw; ++px) {
        float* row = dst + ((n * gh + py) * gw + px) * k;
        for (int64_t ch = 0; ch < c; ++ch) {
          for (int64_t ky = 0; ky < p; ++ky) {
            const float* in = src + ((n * c + ch) * h + py * p + ky) * w + px * p;
            std::copy(in, in + p, row + (ch * p + ky) * p);
          }
        }
      }
    }
  }
  Tensor out({b, gh * gw, proj_.out_features()});
  proj_.Forward(cols.data(), b * gh * gw, out.data());
  return out;
}

absl::StatusOr<Mlp> Mlp::Create(WeightStore& store, const std::string& prefix, int64_t dim,
                                int64_t hidden, const PrecisionPlan& plan) {
  Mlp mlp;
  VITQ_ASSIGN_OR_RETURN(
      auto fc1, LoadLinear(store, prefix + ".fc1", dim, hidden, true, plan, Activation::kGelu));
  VITQ_ASSIGN_OR_RETURN(auto fc2, LoadLinear(store, prefix + ".fc2", hidden, dim, true, plan));
  mlp.fc1_ = std::move(fc1);
  mlp.fc2_ = std::move(fc2);
  return mlp;
}

void Mlp::ForwardAdd(const float* x, int64_t rows, float* residual) const {
  Run(x, nullptr, rows, residual);
}

void Mlp::ForwardAddNormed(const LayerNorm& norm, int64_t rows, float* x) const {
  WithNormed(
      norm, x, rows, nullptr, fc1_.InputGrid(),
      [&](const uint8_t* codes) { Run(nullptr, codes, rows, x); },
      [&](const float* normed) { Run(normed, nullptr, rows, x); });
}

void Mlp::Run(const float* x, const uint8_t* x_codes, int64_t rows, float* residual) const {
  const size_t hidden_size = static_cast<size_t>(rows * fc1_.out_features());
  // Integer fc2: fc1 writes its GELU output straight onto fc2's input grid (4× fewer bytes than
  // floats, and no separate quantization pass), where fc1's kernel can.
  if (const ActQuant* grid = fc2_.InputGrid()) {
    thread_local std::vector<uint8_t> codes;
    codes.resize(hidden_size);
    const bool handed = x_codes ? fc1_.ForwardCodesToCodes(x_codes, rows, *grid, codes.data())
                                : fc1_.ForwardToCodes(x, rows, *grid, codes.data());
    if (handed) {
      fc2_.ForwardCodes(codes.data(), rows, residual, /*accumulate=*/true);
      return;
    }
  }
  thread_local std::vector<float> hidden;
  hidden.resize(hidden_size);
  if (x_codes) {
    fc1_.ForwardCodes(x_codes, rows, hidden.data(), /*accumulate=*/false);
  } else {
    fc1_.Forward(x, rows, hidden.data());
  }
  fc2_.ForwardAdd(hidden.data(), rows, residual);
}

}  // namespace vitq
