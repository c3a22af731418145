#include "backends/deit.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "backends/status_macros.h"

namespace vitq {

absl::StatusOr<std::unique_ptr<Model>> Deit::Create(const ModelConfig& c, WeightStore& store,
                                                    const PrecisionPlan& plan) {
  std::unique_ptr<Deit> m(new Deit(c));
  const int64_t dim = c.embed_dim, grid = c.img_size / c.patch_size;
  const int64_t tokens = grid * grid + c.num_prefix_tokens();
  VITQ_ASSIGN_OR_RETURN(m->patch_embed_, PatchEmbed::Create(store, "patch_embed.proj", c.in_chans,
                                                            c.patch_size, dim, plan));
  VITQ_ASSIGN_OR_RETURN(m->cls_token_, store.Take("cls_token", {1, 1, dim}));
  if (c.distilled) {
    VITQ_ASSIGN_OR_RETURN(m->dist_token_, store.Take("dist_token", {1, 1, dim}));
  }
  VITQ_ASSIGN_OR_RETURN(m->pos_embed_, store.Take("pos_embed", {1, tokens, dim}));
  const int64_t head_dim = dim / c.num_heads;
  for (int64_t i = 0; i < c.depth; ++i) {
    const std::string p = absl::StrCat("blocks.", i, ".");
    Block b;
    VITQ_ASSIGN_OR_RETURN(b.norm1, LayerNorm::Create(store, p + "norm1", dim, c.layer_norm_eps));
    VITQ_ASSIGN_OR_RETURN(b.qkv, LoadLinear(store, p + "attn.qkv", dim, 3 * dim, c.qkv_bias, plan));
    VITQ_ASSIGN_OR_RETURN(b.attn, AttentionCore::Load(store, p + "attn.", c.num_heads, head_dim,
                                                      plan(p + "attn.matmul")));
    VITQ_ASSIGN_OR_RETURN(b.proj, LoadLinear(store, p + "attn.proj", dim, dim, true, plan));
    VITQ_ASSIGN_OR_RETURN(b.norm2, LayerNorm::Create(store, p + "norm2", dim, c.layer_norm_eps));
    VITQ_ASSIGN_OR_RETURN(b.mlp, Mlp::Create(store, p + "mlp", dim, c.mlp_hidden(dim), plan));
    m->blocks_.push_back(std::move(b));
  }
  VITQ_ASSIGN_OR_RETURN(m->norm_, LayerNorm::Create(store, "norm", dim, c.layer_norm_eps));
  VITQ_ASSIGN_OR_RETURN(m->head_, LoadLinear(store, "head", dim, c.num_classes, true, plan));
  if (c.distilled) {
    VITQ_ASSIGN_OR_RETURN(m->head_dist_,
                          LoadLinear(store, "head_dist", dim, c.num_classes, true, plan));
  }
  m->num_parameters_ = store.taken_elements();
  m->naming_ = store.scheme();
  return std::unique_ptr<Model>(std::move(m));
}

void Deit::RunBlock(const Block& b, float* x, int64_t batch, int64_t tokens) const {
  const int64_t rows = batch * tokens, dim = config_.embed_dim;
  thread_local std::vector<float> attn_out;
  attn_out.resize(rows * dim);
  NormQkvAttention(b.norm1, b.qkv, b.attn, x, nullptr, batch, tokens, nullptr, 0,
                   attn_out.data());            // (B·N, C)
  b.proj.ForwardAdd(attn_out.data(), rows, x);  // x += proj(attn)
  b.mlp.ForwardAddNormed(b.norm2, rows, x);     // x += mlp(norm2(x))
}

Tensor Deit::Run(const Tensor& images) const {
  const ModelConfig& c = config_;
  const int64_t batch = images.dim(0), dim = c.embed_dim, prefix = c.num_prefix_tokens();
  Tensor patches = patch_embed_.Forward(images);  // (B, P, C)
  const int64_t num_patches = patches.dim(1), tokens = num_patches + prefix;
  Tensor x({batch * tokens, dim});  // (B·N, C): [cls, (dist), patches] + pos_embed
  const float* pos = pos_embed_.data();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < batch; ++n) {
    float* dst = x.data() + n * tokens * dim;
    for (int64_t j = 0; j < dim; ++j) dst[j] = cls_token_.data()[j] + pos[j];
    if (prefix == 2) {
      for (int64_t j = 0; j < dim; ++j) dst[dim + j] = dist_token_.data()[j] + pos[dim + j];
    }
    const float* src = patches.data() + n * num_patches * dim;
    for (int64_t t = 0; t < num_patches * dim; ++t)
      dst[prefix * dim + t] = src[t] + pos[prefix * dim + t];
  }
  for (const Block& b : blocks_) RunBlock(b, x.data(), batch, tokens);

  // Only the prefix tokens feed the heads: normalise just those.
  Tensor pooled({prefix, batch, dim});  // (prefix, B, C)
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t t = 0; t < prefix; ++t)
      norm_.Forward(x.data() + (n * tokens + t) * dim, pooled.data() + (t * batch + n) * dim, 1);
  }
  Tensor logits({batch, c.num_classes});
  head_.Forward(pooled.data(), batch, logits.data());
  if (prefix == 2) {
    Tensor dist_logits({batch, c.num_classes});
    head_dist_.Forward(pooled.data() + batch * dim, batch, dist_logits.data());
    for (int64_t i = 0; i < logits.numel(); ++i)
      logits.data()[i] = 0.5f * (logits.data()[i] + dist_logits.data()[i]);
  }
  return logits;
}

std::vector<std::vector<std::string>> Deit::DescribeKernels(int64_t batch) const {
  const int64_t grid = config_.img_size / config_.patch_size;
  const int64_t tokens = grid * grid + config_.num_prefix_tokens(), rows = batch * tokens;
  std::vector<std::vector<std::string>> out;
  auto add = [&](const Linear& l, int64_t m) {
    out.push_back({l.name(), SpecName(l.spec()), l.Describe(m)});
  };
  add(patch_embed_.proj(), batch * grid * grid);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const Block& b = blocks_[i];
    add(b.qkv, rows);
    out.push_back({absl::StrCat("blocks.", i, ".attn.matmul"), SpecName(b.attn.spec()),
                   b.attn.Describe(batch, tokens)});
    add(b.proj, rows);
    add(b.mlp.fc1(), rows);
    add(b.mlp.fc2(), rows);
  }
  add(head_, batch);
  return out;
}

}  // namespace vitq
