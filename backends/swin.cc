#include "backends/swin.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "backends/ops.h"
#include "backends/status_macros.h"

namespace vitq {
namespace swin {

std::vector<int32_t> RelativePositionIndex(int64_t ws) {
  const int64_t n = ws * ws;
  std::vector<int32_t> index(n * n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const int64_t dy = i / ws - j / ws + ws - 1, dx = i % ws - j % ws + ws - 1;
      index[i * n + j] = static_cast<int32_t>(dy * (2 * ws - 1) + dx);
    }
  }
  return index;
}

std::vector<float> ShiftMask(int64_t h, int64_t w, int64_t ws, int64_t sh, int64_t sw) {
  auto region = [ws](int64_t pos, int64_t size, int64_t shift) -> int64_t {
    if (pos < size - ws) return 0;
    return pos < size - shift ? 1 : 2;
  };
  const int64_t gh = h / ws, gw = w / ws, n = ws * ws;
  std::vector<float> mask(gh * gw * n * n);
  std::vector<int64_t> id(n);
  for (int64_t wy = 0; wy < gh; ++wy) {
    for (int64_t wx = 0; wx < gw; ++wx) {
      for (int64_t t = 0; t < n; ++t) {
        id[t] = region(wy * ws + t / ws, h, sh) * 3 + region(wx * ws + t % ws, w, sw);
      }
      float* m = mask.data() + (wy * gw + wx) * n * n;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < n; ++j) m[i * n + j] = id[i] == id[j] ? 0.0f : -100.0f;
      }
    }
  }
  return mask;
}

std::vector<int64_t> WindowSourceRows(int64_t h, int64_t w, int64_t ws, int64_t sh, int64_t sw) {
  const int64_t hp = (h + ws - 1) / ws * ws, wp = (w + ws - 1) / ws * ws;
  const int64_t gh = hp / ws, gw = wp / ws;
  std::vector<int64_t> source(gh * gw * ws * ws);
  for (int64_t wy = 0; wy < gh; ++wy) {
    for (int64_t wx = 0; wx < gw; ++wx) {
      for (int64_t t = 0; t < ws * ws; ++t) {
        // Window (wy, wx)'s token t in the padded map rolled by (-sh, -sw).
        const int64_t y = (wy * ws + t / ws + sh) % hp, x = (wx * ws + t % ws + sw) % wp;
        source[(wy * gw + wx) * ws * ws + t] = y < h && x < w ? y * w + x : -1;
      }
    }
  }
  return source;
}

void WindowPartition(const float* x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t ws,
                     int64_t sh, int64_t sw, float* windows) {
  const std::vector<int64_t> source = WindowSourceRows(h, w, ws, sh, sw);
  const RowGather gather{source.data(), static_cast<int64_t>(source.size()), h * w};
  const int64_t rows = b * gather.period;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t src = gather.SourceRow(r);
    float* dst = windows + r * c;
    if (src < 0) {
      std::memset(dst, 0, c * sizeof(float));
    } else {
      std::memcpy(dst, x + src * c, c * sizeof(float));
    }
  }
}

void WindowReverseAdd(const float* windows, const RowGather& partition, int64_t rows, int64_t c,
                      float* x) {
  // Each token is the source of at most one window row, so rows can be added in parallel.
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t dst_row = partition.SourceRow(r);
    if (dst_row < 0) continue;  // padding
    const float* src = windows + r * c;
    float* dst = x + dst_row * c;
#pragma omp simd
    for (int64_t k = 0; k < c; ++k) dst[k] += src[k];
  }
}

void MergePatches(const float* x, int64_t b, int64_t h, int64_t w, int64_t c, float* out) {
  const int64_t oh = (h + 1) / 2, ow = (w + 1) / 2;
  static constexpr int64_t kOffsets[4][2] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}};  // (dy, dx)
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < b; ++n) {
    for (int64_t i = 0; i < oh; ++i) {
      for (int64_t j = 0; j < ow; ++j) {
        float* dst = out + ((n * oh + i) * ow + j) * 4 * c;
        for (int q = 0; q < 4; ++q) {
          const int64_t y = 2 * i + kOffsets[q][0], xx = 2 * j + kOffsets[q][1];
          if (y < h && xx < w) {
            std::memcpy(dst + q * c, x + ((n * h + y) * w + xx) * c, c * sizeof(float));
          } else {
            std::memset(dst + q * c, 0, c * sizeof(float));
          }
        }
      }
    }
  }
}

}  // namespace swin

int64_t Swin::padded(int64_t n) const { return (n + window_ - 1) / window_ * window_; }

absl::StatusOr<std::unique_ptr<Model>> Swin::Create(const ModelConfig& c, WeightStore& store,
                                                    const PrecisionPlan& plan) {
  std::unique_ptr<Swin> m(new Swin(c));
  const int64_t ws = c.window_size, n = ws * ws;
  m->window_ = ws;
  VITQ_ASSIGN_OR_RETURN(m->patch_embed_, PatchEmbed::Create(store, "patch_embed.proj", c.in_chans,
                                                            c.patch_size, c.embed_dim, plan));
  VITQ_ASSIGN_OR_RETURN(
      m->patch_norm_, LayerNorm::Create(store, "patch_embed.norm", c.embed_dim, c.layer_norm_eps));
  const std::vector<int32_t> rel_index = swin::RelativePositionIndex(ws);
  int64_t h = c.img_size / c.patch_size, w = h, dim = c.embed_dim;
  for (size_t s = 0; s < c.depths.size(); ++s) {
    Stage stage;
    if (s > 0) {
      const std::string p = absl::StrCat("layers.", s, ".downsample.");
      Merge merge;
      VITQ_ASSIGN_OR_RETURN(merge.norm,
                            LayerNorm::Create(store, p + "norm", 4 * dim, c.layer_norm_eps));
      VITQ_ASSIGN_OR_RETURN(merge.reduction,
                            LoadLinear(store, p + "reduction", 4 * dim, 2 * dim, false, plan));
      stage.downsample = std::move(merge);
      dim *= 2;
      h = (h + 1) / 2;
      w = (w + 1) / 2;
    }
    stage.dim = dim;
    stage.height = h;
    stage.width = w;
    const int64_t heads = c.stage_heads[s];
    for (int64_t j = 0; j < c.depths[s]; ++j) {
      const std::string p = absl::StrCat("layers.", s, ".blocks.", j, ".");
      Block b;
      b.name = p;
      VITQ_ASSIGN_OR_RETURN(b.norm1, LayerNorm::Create(store, p + "norm1", dim, c.layer_norm_eps));
      VITQ_ASSIGN_OR_RETURN(b.qkv,
                            LoadLinear(store, p + "attn.qkv", dim, 3 * dim, c.qkv_bias, plan));
      VITQ_ASSIGN_OR_RETURN(b.attn, AttentionCore::Load(store, p + "attn.", heads, dim / heads,
                                                        plan(p + "attn.matmul")));
      VITQ_ASSIGN_OR_RETURN(b.proj, LoadLinear(store, p + "attn.proj", dim, dim, true, plan));
      VITQ_ASSIGN_OR_RETURN(b.norm2, LayerNorm::Create(store, p + "norm2", dim, c.layer_norm_eps));
      VITQ_ASSIGN_OR_RETURN(b.mlp, Mlp::Create(store, p + "mlp", dim, c.mlp_hidden(dim), plan));
      VITQ_ASSIGN_OR_RETURN(Tensor table, store.Take(p + "attn.relative_position_bias_table",
                                                     {(2 * ws - 1) * (2 * ws - 1), heads}));
      const int64_t hp = m->padded(h), wp = m->padded(w);
      if (j % 2 == 1) {
        b.shift_h = ws >= hp ? 0 : ws / 2;
        b.shift_w = ws >= wp ? 0 : ws / 2;
      }
      b.window_source = swin::WindowSourceRows(h, w, ws, b.shift_h, b.shift_w);
      const bool shifted = b.shift_h > 0 || b.shift_w > 0;
      std::vector<float> mask;
      if (shifted) mask = swin::ShiftMask(hp, wp, ws, b.shift_h, b.shift_w);
      b.bias_groups = shifted ? (hp / ws) * (wp / ws) : 1;
      b.attn_bias = Tensor({b.bias_groups, heads, n, n});
      for (int64_t g = 0; g < b.bias_groups; ++g) {
        for (int64_t hd = 0; hd < heads; ++hd) {
          float* dst = b.attn_bias.data() + (g * heads + hd) * n * n;
          for (int64_t e = 0; e < n * n; ++e) {
            dst[e] =
                table.data()[rel_index[e] * heads + hd] + (shifted ? mask[g * n * n + e] : 0.0f);
          }
        }
      }
      stage.blocks.push_back(std::move(b));
    }
    m->stages_.push_back(std::move(stage));
  }
  VITQ_ASSIGN_OR_RETURN(m->norm_, LayerNorm::Create(store, "norm", dim, c.layer_norm_eps));
  VITQ_ASSIGN_OR_RETURN(m->head_, LoadLinear(store, "head.fc", dim, c.num_classes, true, plan));
  m->num_parameters_ = store.taken_elements();
  m->naming_ = store.scheme();
  return std::unique_ptr<Model>(std::move(m));
}

void Swin::RunBlock(const Block& b, const Stage& s, float* x, int64_t batch) const {
  const int64_t c = s.dim, rows = batch * s.height * s.width;
  const int64_t tokens = window_ * window_, groups = batch * num_windows(s),
                wrows = groups * tokens;
  thread_local std::vector<float> windows, attn_out;
  windows.resize(wrows * c);
  attn_out.resize(wrows * c);
  // norm1 writes its rows straight in window order (the partition is a row gather).
  const RowGather partition{b.window_source.data(), static_cast<int64_t>(b.window_source.size()),
                            s.height * s.width};
  NormQkvAttention(b.norm1, b.qkv, b.attn, x, &partition, groups, tokens, b.attn_bias.data(),
                   b.bias_groups, attn_out.data());        // (B·nW·N, C)
  b.proj.Forward(attn_out.data(), wrows, windows.data());  // (B·nW·N, C)
  swin::WindowReverseAdd(windows.data(), partition, wrows, c, x);
  b.mlp.ForwardAddNormed(b.norm2, rows, x);  // x += mlp(norm2(x))
}

Tensor Swin::Run(const Tensor& images) const {
  const int64_t batch = images.dim(0);
  Tensor x = patch_embed_.Forward(images);  // (B, H·W, C)
  patch_norm_.Forward(x.data(), x.data(), x.dim(0) * x.dim(1));
  int64_t h = config_.img_size / config_.patch_size, w = h;
  for (const Stage& s : stages_) {
    if (s.downsample) {
      const int64_t c = s.dim / 2;
      Tensor merged({batch * s.height * s.width, 4 * c});
      swin::MergePatches(x.data(), batch, h, w, c, merged.data());
      x = Tensor({batch * s.height * s.width, s.dim});
      NormThenLinear(s.downsample->norm, s.downsample->reduction, merged.data(), merged.dim(0),
                     x.data());
    }
    h = s.height;
    w = s.width;
    for (const Block& b : s.blocks) RunBlock(b, s, x.data(), batch);
  }
  const int64_t dim = stages_.back().dim, tokens = h * w;
  norm_.Forward(x.data(), x.data(), batch * tokens);
  Tensor pooled({batch, dim});  // mean over tokens
  for (int64_t n = 0; n < batch; ++n) {
    float* dst = pooled.data() + n * dim;
    std::fill(dst, dst + dim, 0.0f);
    for (int64_t t = 0; t < tokens; ++t) {
      const float* src = x.data() + (n * tokens + t) * dim;
      for (int64_t k = 0; k < dim; ++k) dst[k] += src[k];
    }
    for (int64_t k = 0; k < dim; ++k) dst[k] /= static_cast<float>(tokens);
  }
  Tensor logits({batch, config_.num_classes});
  head_.Forward(pooled.data(), batch, logits.data());
  return logits;
}

std::vector<std::vector<std::string>> Swin::DescribeKernels(int64_t batch) const {
  std::vector<std::vector<std::string>> out;
  auto add = [&](const Linear& l, int64_t m) {
    out.push_back({l.name(), SpecName(l.spec()), l.Describe(m)});
  };
  const int64_t grid = config_.img_size / config_.patch_size;
  add(patch_embed_.proj(), batch * grid * grid);
  for (const Stage& s : stages_) {
    if (s.downsample) add(s.downsample->reduction, batch * s.height * s.width);
    const int64_t groups = batch * num_windows(s), wrows = groups * window_ * window_;
    for (const Block& b : s.blocks) {
      add(b.qkv, wrows);
      out.push_back({b.name + "attn.matmul", SpecName(b.attn.spec()),
                     b.attn.Describe(groups, window_ * window_)});
      add(b.proj, wrows);
      add(b.mlp.fc1(), batch * s.height * s.width);
      add(b.mlp.fc2(), batch * s.height * s.width);
    }
  }
  add(head_, batch);
  return out;
}

}  // namespace vitq
