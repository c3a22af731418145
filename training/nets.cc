#include "training/nets.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "backends/swin.h"

namespace vitq::training {
namespace {

namespace nn = torch::nn;

void TruncNormal(torch::Tensor& t, double std) {
  torch::NoGradGuard no_grad;
  t.normal_(0.0, std).clamp_(-2 * std, 2 * std);
}

// Linear with timm's init: trunc-normal(0.02) weight, zero bias.
QLinear MakeLinear(int64_t in, int64_t out, bool bias = true) {
  QLinear l(in, out, bias);
  TruncNormal(l->weight, 0.02);
  if (bias) nn::init::zeros_(l->bias);
  return l;
}

nn::LayerNorm MakeNorm(int64_t dim, double eps) {
  return nn::LayerNorm(nn::LayerNormOptions({dim}).eps(eps));
}

class MlpImpl : public nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t hidden)
      : fc1(register_module("fc1", MakeLinear(dim, hidden))),
        fc2(register_module("fc2", MakeLinear(hidden, dim))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::gelu(fc1(x))); }
  QLinear fc1, fc2;
};
TORCH_MODULE(Mlp);

// ---- DeiT ---------------------------------------------------------------------------


class BlockImpl : public nn::Module {
 public:
  BlockImpl(int64_t dim, int64_t heads, int64_t hidden, bool qkv_bias, double eps)
      : norm1(register_module("norm1", MakeNorm(dim, eps))),
        attn(register_module("attn", Attention(dim, heads, qkv_bias))),
        norm2(register_module("norm2", MakeNorm(dim, eps))),
        mlp(register_module("mlp", Mlp(dim, hidden))) {}
  torch::Tensor forward(torch::Tensor x) {
    x = x + attn(norm1(x));
    return x + mlp(norm2(x));
  }
  nn::LayerNorm norm1;
  Attention attn;
  nn::LayerNorm norm2;
  Mlp mlp;
};
TORCH_MODULE(Block);

class PatchEmbedImpl : public nn::Module {
 public:
  PatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t patch, bool with_norm, double eps)
      : proj(register_module("proj", QLinear(in_chans * patch * patch, dim, true, patch, in_chans))) {
    if (with_norm) norm = register_module("norm", MakeNorm(dim, eps));
  }
  // (B, C, H, W) → (B, H/p, W/p, dim)
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = proj(x).permute({0, 2, 3, 1});
    return norm ? norm(y) : y;
  }
  QLinear proj;
  nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(PatchEmbed);

class DeitNet : public Classifier {
 public:
  explicit DeitNet(const ModelConfig& c) : distilled_(c.distilled) {
    const int64_t dim = c.embed_dim, grid = c.img_size / c.patch_size;
    patch_embed_ = register_module(
        "patch_embed", PatchEmbed(c.in_chans, dim, c.patch_size, false, c.layer_norm_eps));
    cls_token_ = register_parameter("cls_token", torch::zeros({1, 1, dim}));
    if (distilled_) dist_token_ = register_parameter("dist_token", torch::zeros({1, 1, dim}));
    pos_embed_ = register_parameter("pos_embed",
                                    torch::zeros({1, grid * grid + c.num_prefix_tokens(), dim}));
    TruncNormal(pos_embed_, 0.02);
    TruncNormal(cls_token_, 0.02);
    if (distilled_) TruncNormal(dist_token_, 0.02);
    blocks_ = register_module("blocks", nn::ModuleList());
    for (int64_t i = 0; i < c.depth; ++i) {
      blocks_->push_back(Block(dim, c.num_heads, c.mlp_hidden(dim), c.qkv_bias, c.layer_norm_eps));
    }
    norm_ = register_module("norm", MakeNorm(dim, c.layer_norm_eps));
    head_ = register_module("head", MakeLinear(dim, c.num_classes));
    if (distilled_) head_dist_ = register_module("head_dist", MakeLinear(dim, c.num_classes));
  }

  Logits Forward(const torch::Tensor& images) override {
    const int64_t b = images.size(0);
    auto x = patch_embed_(images).flatten(1, 2);  // (B, P, C)
    std::vector<torch::Tensor> parts = {cls_token_.expand({b, -1, -1})};
    if (distilled_) parts.push_back(dist_token_.expand({b, -1, -1}));
    parts.push_back(x);
    x = torch::cat(parts, 1) + pos_embed_;
    for (const auto& m : *blocks_) x = m->as<BlockImpl>()->forward(x);
    x = norm_(x);
    Logits out;
    out.logits = head_(x.select(1, 0));
    if (distilled_) out.dist = head_dist_(x.select(1, 1));
    return out;
  }

 private:
  bool distilled_;
  PatchEmbed patch_embed_{nullptr};
  torch::Tensor cls_token_, dist_token_, pos_embed_;
  nn::ModuleList blocks_{nullptr};
  nn::LayerNorm norm_{nullptr};
  QLinear head_{nullptr}, head_dist_{nullptr};
};

// ---- Swin ---------------------------------------------------------------------------

class WindowAttentionImpl : public AttentionImpl {
 public:
  WindowAttentionImpl(int64_t dim, int64_t heads, int64_t ws, bool qkv_bias)
      : AttentionImpl(dim, heads, qkv_bias), heads_(heads), n_(ws * ws) {
    relative_position_bias_table = register_parameter(
        "relative_position_bias_table", torch::zeros({(2 * ws - 1) * (2 * ws - 1), heads}));
    TruncNormal(relative_position_bias_table, 0.02);
    const std::vector<int32_t> idx = swin::RelativePositionIndex(ws);
    index_ = torch::tensor(std::vector<int64_t>(idx.begin(), idx.end()), torch::kLong);
  }
  // (heads, N, N)
  torch::Tensor RelativeBias() {
    return relative_position_bias_table.index_select(0, index_)
        .view({n_, n_, heads_})
        .permute({2, 0, 1});
  }
  torch::Tensor relative_position_bias_table;

 private:
  int64_t heads_, n_;
  torch::Tensor index_;
};
TORCH_MODULE(WindowAttention);

class SwinBlockImpl : public nn::Module {
 public:
  SwinBlockImpl(int64_t dim, int64_t heads, int64_t ws, int64_t shift, int64_t h, int64_t w,
                const ModelConfig& c)
      : ws_(ws),
        shift_(shift),
        h_(h),
        w_(w),
        norm1(register_module("norm1", MakeNorm(dim, c.layer_norm_eps))),
        attn(register_module("attn", WindowAttention(dim, heads, ws, c.qkv_bias))),
        norm2(register_module("norm2", MakeNorm(dim, c.layer_norm_eps))),
        mlp(register_module("mlp", Mlp(dim, c.mlp_hidden(dim)))) {
    if (shift_ > 0) {
      const std::vector<float> mask = swin::ShiftMask(h, w, ws, shift, shift);
      mask_ = torch::tensor(mask).view({1, (h / ws) * (w / ws), 1, ws * ws, ws * ws});
    }
  }

  // x: (B, H, W, C)
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t b = x.size(0), c = x.size(3), gh = h_ / ws_, gw = w_ / ws_, n = ws_ * ws_;
    auto y = norm1(x);
    if (shift_) y = torch::roll(y, {-shift_, -shift_}, {1, 2});
    y = y.view({b, gh, ws_, gw, ws_, c}).permute({0, 1, 3, 2, 4, 5}).reshape({b * gh * gw, n, c});
    torch::Tensor bias = attn->RelativeBias().unsqueeze(0);  // (1, heads, N, N)
    if (shift_) {
      // (B, nW, heads, N, N) → (B·nW, heads, N, N)
      bias = (bias.unsqueeze(0) + mask_)
                 .expand({b, gh * gw, -1, n, n})
                 .reshape({b * gh * gw, -1, n, n});
    }
    y = attn->forward(y, bias);
    y = y.view({b, gh, gw, ws_, ws_, c}).permute({0, 1, 3, 2, 4, 5}).reshape({b, h_, w_, c});
    if (shift_) y = torch::roll(y, {shift_, shift_}, {1, 2});
    auto out = x + y;
    return out + mlp(norm2(out));
  }

 private:
  int64_t ws_, shift_, h_, w_;
  torch::Tensor mask_;

 public:
  nn::LayerNorm norm1;
  WindowAttention attn;
  nn::LayerNorm norm2;
  Mlp mlp;
};
TORCH_MODULE(SwinBlock);

class PatchMergingImpl : public nn::Module {
 public:
  PatchMergingImpl(int64_t dim, double eps)
      : norm(register_module("norm", MakeNorm(4 * dim, eps))),
        reduction(register_module("reduction", MakeLinear(4 * dim, 2 * dim, false))) {}
  // (B, H, W, C) → (B, H/2, W/2, 2C), concatenation order x(0,0), x(1,0), x(0,1), x(1,1)
  torch::Tensor forward(const torch::Tensor& x) {
    using torch::indexing::Slice;
    auto x0 = x.index({Slice(), Slice(0, {}, 2), Slice(0, {}, 2)});
    auto x1 = x.index({Slice(), Slice(1, {}, 2), Slice(0, {}, 2)});
    auto x2 = x.index({Slice(), Slice(0, {}, 2), Slice(1, {}, 2)});
    auto x3 = x.index({Slice(), Slice(1, {}, 2), Slice(1, {}, 2)});
    return reduction(norm(torch::cat({x0, x1, x2, x3}, -1)));
  }
  nn::LayerNorm norm;
  QLinear reduction;
};
TORCH_MODULE(PatchMerging);

class StageImpl : public nn::Module {
 public:
  nn::ModuleList blocks{nullptr};
  PatchMerging downsample{nullptr};
};
TORCH_MODULE(Stage);

class SwinNet : public Classifier {
 public:
  explicit SwinNet(const ModelConfig& c) {
    const int64_t ws0 = c.window_size;
    patch_embed_ = register_module(
        "patch_embed", PatchEmbed(c.in_chans, c.embed_dim, c.patch_size, true, c.layer_norm_eps));
    layers_ = register_module("layers", nn::ModuleList());
    int64_t h = c.img_size / c.patch_size, dim = c.embed_dim;
    for (size_t s = 0; s < c.depths.size(); ++s) {
      auto stage = Stage();
      if (s > 0) {
        if (h % 2)
          throw std::invalid_argument("training needs even feature maps before patch merging");
        stage->downsample =
            stage->register_module("downsample", PatchMerging(dim, c.layer_norm_eps));
        dim *= 2;
        h /= 2;
      }
      // The engine pads maps that are not a multiple of the window (torchvision's rule);
      // training keeps to maps that need no padding.
      if (h % ws0 != 0) {
        throw std::invalid_argument(
            "training needs feature maps that are a multiple of the window (" + std::to_string(h) +
            " vs " + std::to_string(ws0) + ")");
      }
      const int64_t ws = ws0;
      stage->blocks = stage->register_module("blocks", nn::ModuleList());
      for (int64_t j = 0; j < c.depths[s]; ++j) {
        const int64_t shift = (j % 2 == 1 && ws < h) ? ws / 2 : 0;
        stage->blocks->push_back(SwinBlock(dim, c.stage_heads[s], ws, shift, h, h, c));
      }
      layers_->push_back(stage);
    }
    norm_ = register_module("norm", MakeNorm(dim, c.layer_norm_eps));
    head_ = register_module("head", std::make_shared<HeadImpl>(dim, c.num_classes));
  }

  Logits Forward(const torch::Tensor& images) override {
    auto x = patch_embed_(images);  // (B, H, W, C)
    for (const auto& m : *layers_) {
      auto* stage = m->as<StageImpl>();
      if (stage->downsample) x = stage->downsample(x);
      for (const auto& blk : *stage->blocks) x = blk->as<SwinBlockImpl>()->forward(x);
    }
    x = norm_(x).mean({1, 2});
    return Logits{head_->fc(x), {}};
  }

 private:
  struct HeadImpl : nn::Module {
    HeadImpl(int64_t dim, int64_t classes) : fc(register_module("fc", MakeLinear(dim, classes))) {}
    QLinear fc;
  };
  PatchEmbed patch_embed_{nullptr};
  nn::ModuleList layers_{nullptr};
  nn::LayerNorm norm_{nullptr};
  std::shared_ptr<HeadImpl> head_;
};

}  // namespace

// ---- quantization-aware layers ----------------------------------------------------------

QLinearImpl::QLinearImpl(int64_t in, int64_t out, bool with_bias, int64_t patch, int64_t in_chans)
    : patch_(patch) {
  // nn::Linear / nn::Conv2d's default init (timm re-initialises Linears with MakeLinear).
  weight = register_parameter("weight", patch > 0 ? torch::empty({out, in_chans, patch, patch})
                                                  : torch::empty({out, in}));
  nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (with_bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    bias = register_parameter("bias", torch::empty({out}).uniform_(-bound, bound));
  }
}

torch::Tensor QLinearImpl::forward(const torch::Tensor& x) {
  const torch::Tensor in = quantized() ? input_quant(x) : x;
  const torch::Tensor w = quantized() ? weight_quant(weight) : weight;
  if (patch_ > 0) {
    return torch::nn::functional::conv2d(
        in, w, torch::nn::functional::Conv2dFuncOptions().bias(bias).stride(patch_));
  }
  return torch::nn::functional::linear(in, w, bias);
}

void QLinearImpl::EnableQuantization(int weight_bits, int act_bits) {
  weight_quant = register_module("weight_quant", WeightQuantizer(weight.detach(), weight_bits));
  input_quant = register_module(
      "input_quant", ActQuantizer(act_bits, ActQuantizerImpl::Mode::kAsymmetric));
}

AttentionImpl::AttentionImpl(int64_t dim, int64_t heads, bool qkv_bias)
    : qkv(register_module("qkv", MakeLinear(dim, 3 * dim, qkv_bias))),
      proj(register_module("proj", MakeLinear(dim, dim))),
      heads_(heads),
      head_dim_(dim / heads) {}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& bias) {
  const int64_t b = x.size(0), n = x.size(1), c = x.size(2), d = head_dim_;
  auto qkv_t = qkv(x).reshape({b, n, 3, heads_, d}).permute({2, 0, 3, 1, 4});  // (3, B, H, N, d)
  torch::Tensor q = qkv_t[0], k = qkv_t[1], v = qkv_t[2];
  if (!q_norm.is_empty()) {
    q = q_norm(q);
    k = k_norm(k);
  }
  q = q * (1.0 / std::sqrt(static_cast<double>(d)));
  if (quantized()) {
    q = q_quant(q);
    k = k_quant(k);
    v = v_quant(v);
  }
  if (capture_) {
    capture_->q.push_back(q);
    capture_->k.push_back(k);
  }
  auto attn = torch::matmul(q, k.transpose(-2, -1));  // (B, H, N, N)
  if (bias.defined()) attn = attn + bias;
  attn = torch::softmax(attn, -1);
  if (quantized()) attn = probs_quant(attn);
  auto out = torch::matmul(attn, v).transpose(1, 2).reshape({b, n, c});
  return proj(out);
}

void AttentionImpl::EnableQuantization(int bits, Irm irm) {
  using Mode = ActQuantizerImpl::Mode;
  q_quant = register_module("q_quant", ActQuantizer(bits, Mode::kSigned));
  k_quant = register_module("k_quant", ActQuantizer(bits, Mode::kSigned));
  v_quant = register_module("v_quant", ActQuantizer(bits, Mode::kSigned));
  probs_quant = register_module("probs_quant", ActQuantizer(bits, Mode::kUnsigned));
  if (irm == Irm::kNone) return;
  // The affine IRM folds its shift into the qkv bias at export.
  if (irm == Irm::kAffine && !qkv->bias.defined())
    throw std::invalid_argument("the affine IRM needs a qkv bias (qkv_bias: true)");
  q_norm = register_module("q_norm", Rectifier(heads_, head_dim_, irm));
  k_norm = register_module("k_norm", Rectifier(heads_, head_dim_, irm));
}

void EnableQuantization(Classifier& model, const std::function<QatBits(const std::string&)>& bits,
                        Irm irm) {
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    if (auto* linear = dynamic_cast<QLinearImpl*>(item.value().get())) {
      const QatBits b = bits(item.key());
      linear->EnableQuantization(b.weight_bits, b.act_bits);
    } else if (auto* attn = dynamic_cast<AttentionImpl*>(item.value().get())) {
      attn->EnableQuantization(bits(item.key() + ".matmul").act_bits, irm);
    }
  }
}

void SetQkCapture(Classifier& model, QkCapture* sink) {
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto* attn = dynamic_cast<AttentionImpl*>(m.get())) attn->set_capture(sink);
  }
}

namespace {

void AddConvBnRelu(nn::Sequential& seq, int64_t in, int64_t out) {
  seq->push_back(nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1).bias(false)));
  seq->push_back(nn::BatchNorm2d(out));
  seq->push_back(nn::ReLU());
}

}  // namespace

std::shared_ptr<Classifier> MakeClassifier(const ModelConfig& config) {
  if (config.arch == Arch::kDeit) return std::make_shared<DeitNet>(config);
  return std::make_shared<SwinNet>(config);
}

TeacherCnnImpl::TeacherCnnImpl(int64_t in_chans, int64_t num_classes) {
  nn::Sequential seq;
  AddConvBnRelu(seq, in_chans, 32);
  AddConvBnRelu(seq, 32, 32);
  seq->push_back(nn::MaxPool2d(2));
  AddConvBnRelu(seq, 32, 64);
  AddConvBnRelu(seq, 64, 64);
  seq->push_back(nn::MaxPool2d(2));
  AddConvBnRelu(seq, 64, 128);
  AddConvBnRelu(seq, 128, 128);
  features_ = register_module("features", seq);
  fc_ = register_module("fc", nn::Linear(128, num_classes));
}

torch::Tensor TeacherCnnImpl::forward(const torch::Tensor& images) {
  return fc_(features_->forward(images).mean({2, 3}));
}

}  // namespace vitq::training
