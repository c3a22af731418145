#include "training/qat.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <span>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "backends/artifact.h"
#include "backends/model.h"
#include "backends/safetensors.h"
#include "backends/status_macros.h"
#include "training/export.h"

namespace vitq::training {
namespace {

namespace F = torch::nn::functional;

std::span<const uint8_t> Bytes(const torch::Tensor& contiguous) {
  return {static_cast<const uint8_t*>(contiguous.data_ptr()),
          static_cast<size_t>(contiguous.numel()) * contiguous.element_size()};
}

void AddFloat(SafetensorsWriter& writer, const std::string& name, const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
  writer.Add(name, DType::kF32, Shape(c.sizes().begin(), c.sizes().end()), Bytes(c));
}

// The integer layer spec and weight codes of a quantized Linear.
absl::StatusOr<QuantSpec> LinearSpec(const std::string& layer, QLinearImpl& l,
                                     WeightQuant& weight) {
  if (!l.input_quant->initialized())
    return absl::FailedPreconditionError(layer + ": input quantizer never saw a training batch");
  QuantSpec s;
  s.precision = Precision::kInt8;
  s.weight_bits = l.weight_quant->bits();
  s.act.bits = l.input_quant->bits();
  s.act.scale = l.input_quant->Step();
  s.act.zero_point = l.input_quant->ZeroPoint();
  const torch::Tensor codes = l.weight_quant->Codes(l.weight).contiguous();
  weight.bits = s.weight_bits;
  weight.rows = codes.size(0);
  weight.cols = codes.size(1);
  weight.values.assign(codes.data_ptr<int8_t>(), codes.data_ptr<int8_t>() + codes.numel());
  const torch::Tensor steps = l.weight_quant->Scales();
  weight.scales.assign(steps.data_ptr<float>(), steps.data_ptr<float>() + steps.numel());
  if (absl::Status st = ValidateSpec(s); !st.ok())
    return absl::InvalidArgumentError(absl::StrCat(layer, ": ", st.message()));
  return s;
}

absl::StatusOr<QuantSpec> AttentionSpec(const std::string& layer, AttentionImpl& a) {
  for (ActQuantizer* q : {&a.q_quant, &a.k_quant, &a.v_quant, &a.probs_quant}) {
    if (!(*q)->initialized())
      return absl::FailedPreconditionError(layer + ": a quantizer never saw a training batch");
  }
  QuantSpec s;
  s.precision = Precision::kInt8;
  s.is_attention = true;
  s.attn.qkv_bits = a.q_quant->bits();
  s.attn.probs_bits = a.probs_quant->bits();
  s.attn.q_scale = a.q_quant->Step();
  s.attn.k_scale = a.k_quant->Step();
  s.attn.v_scale = a.v_quant->Step();
  s.attn.probs_scale = a.probs_quant->Step();
  if (!a.q_norm.is_empty() && a.q_norm->form() == Irm::kLayerNorm) {
    // tensors <block>.attn.q_norm.* are written as float parameters
    s.attn.rectify = true;
    s.attn.rectify_eps = static_cast<float>(a.q_norm->eps());
  }
  if (absl::Status st = ValidateSpec(s); !st.ok())
    return absl::InvalidArgumentError(absl::StrCat(layer, ": ", st.message()));
  return s;
}

// The affine IRM of one attention as a map of its qkv output rows, out ← scale⊙out + shift
// (q rows, then k rows, v rows unchanged): what export folds into the qkv projection.
struct QkvFold {
  torch::Tensor scale, shift;  // (3·dim)
};

// Folds of every attention with the affine IRM, by the name of its qkv Linear.
std::map<std::string, QkvFold> AffineIrmFolds(Classifier& student) {
  std::map<std::string, QkvFold> folds;
  for (const auto& item : student.named_modules("", /*include_self=*/false)) {
    auto* attn = dynamic_cast<AttentionImpl*>(item.value().get());
    if (!attn || attn->q_norm.is_empty() || attn->q_norm->form() != Irm::kAffine) continue;
    const torch::Tensor v_scale = torch::ones({attn->heads() * attn->head_dim()});
    folds[item.key() + ".qkv"] = {
        torch::cat(
            {attn->q_norm->AffineScale().flatten(), attn->k_norm->AffineScale().flatten(), v_scale})
            .contiguous(),
        torch::cat({attn->q_norm->AffineShift().flatten(), attn->k_norm->AffineShift().flatten(),
                    torch::zeros_like(v_scale)})
            .contiguous()};
  }
  return folds;
}

// Row r of the layer's output scaled by a: its step times |a|, its codes negated when a < 0
// (the codes are symmetric, [−Qp, Qp]).
void FoldIntoWeight(const QkvFold& fold, WeightQuant& weight) {
  const float* scale = fold.scale.data_ptr<float>();
  for (int64_t r = 0; r < weight.rows; ++r) {
    weight.scales[r] *= std::abs(scale[r]);
    if (scale[r] >= 0) continue;
    for (int64_t c = 0; c < weight.cols; ++c) {
      int8_t& code = weight.values[r * weight.cols + c];
      code = static_cast<int8_t>(-code);
    }
  }
}

}  // namespace

QatBits LayerBitsFor(const QatOptions& o, const std::string& layer) {
  return IsEdgeLayer(layer) ? o.edge : o.bits;
}

absl::StatusOr<QatModels> MakeQatModels(const std::string& fp_checkpoint, const QatOptions& o) {
  QatModels m;
  VITQ_ASSIGN_OR_RETURN(m.config, ResolveConfig(fp_checkpoint, std::nullopt));
  VITQ_ASSIGN_OR_RETURN(std::shared_ptr<const SafetensorsFile> file,
                        SafetensorsFile::Open(fp_checkpoint));
  if (IsQuantizedArtifact(*file)) {
    return absl::InvalidArgumentError(absl::StrCat(
        fp_checkpoint, " is a quantized artifact: QAT starts from a float checkpoint"));
  }
  try {
    m.student = MakeClassifier(m.config);
    m.teacher = MakeClassifier(m.config);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
  VITQ_RETURN_IF_ERROR(LoadCheckpoint(*m.student, fp_checkpoint));
  VITQ_RETURN_IF_ERROR(LoadCheckpoint(*m.teacher, fp_checkpoint));
  m.teacher->eval();
  for (auto& p : m.teacher->parameters()) p.set_requires_grad(false);
  try {
    EnableQuantization(
        *m.student, [&](const std::string& layer) { return LayerBitsFor(o, layer); }, o.irm);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return m;
}

StepLossFn QatStepLoss(QatModels& m, const QatOptions& o) {
  std::shared_ptr<Classifier> student = m.student, teacher = m.teacher;
  // Shared so that the captures live as long as the returned function.
  auto student_qk = std::make_shared<QkCapture>(), teacher_qk = std::make_shared<QkCapture>();
  const auto ce = F::CrossEntropyFuncOptions().label_smoothing(o.train.label_smoothing);
  return [student, teacher, student_qk, teacher_qk, ce, o](const torch::Tensor& x,
                                                           const torch::Tensor& y) {
    student_qk->clear();
    teacher_qk->clear();
    if (o.dgd) SetQkCapture(*student, student_qk.get());
    Logits out = student->Forward(x);
    SetQkCapture(*student, nullptr);
    torch::Tensor teacher_labels;
    if (o.distill || o.dgd) {
      torch::NoGradGuard no_grad;
      if (o.dgd) SetQkCapture(*teacher, teacher_qk.get());
      teacher_labels = teacher->Forward(x).Inference().argmax(1);
      SetQkCapture(*teacher, nullptr);
    }
    const torch::Tensor& second_target = o.distill ? teacher_labels : y;
    const torch::Tensor& second_logits = out.dist.defined() ? out.dist : out.logits;
    torch::Tensor loss = 0.5 * F::cross_entropy(out.logits, y, ce) +
                         0.5 * F::cross_entropy(second_logits, second_target, ce);
    if (o.dgd) loss = loss + o.dgd_weight * DgdLoss(*student_qk, *teacher_qk, o.dgd_reduction);
    return StepOutput{loss, out};
  };
}

absl::StatusOr<TrainResult> TrainQat(QatModels& m, const data::LabeledImages& train,
                                     const data::LabeledImages& test, const QatOptions& o) {
  const float mean = m.config.preprocess.mean[0], std = m.config.preprocess.std[0];
  return TrainWithLoss(*m.student, train, test, mean, std, o.train, QatStepLoss(m, o));
}

absl::Status ExportQatArtifact(Classifier& student, const ModelConfig& config,
                               const std::string& provenance_json, const std::string& output) {
  torch::NoGradGuard no_grad;
  SafetensorsWriter writer;
  std::map<std::string, QuantSpec> layers;
  std::set<std::string> integer_weights;  // parameters written as codes, not floats
  const std::map<std::string, QkvFold> folds = AffineIrmFolds(student);
  for (const auto& item : student.named_modules("", /*include_self=*/false)) {
    const std::string& name = item.key();
    if (auto* linear = dynamic_cast<QLinearImpl*>(item.value().get());
        linear && linear->quantized()) {
      WeightQuant weight;
      VITQ_ASSIGN_OR_RETURN(layers[name], LinearSpec(name, *linear, weight));
      if (auto fold = folds.find(name); fold != folds.end()) FoldIntoWeight(fold->second, weight);
      AddQuantizedWeight(writer, name, weight);
      integer_weights.insert(name + ".weight");
    } else if (auto* attn = dynamic_cast<AttentionImpl*>(item.value().get());
               attn && attn->quantized()) {
      VITQ_ASSIGN_OR_RETURN(layers[name + ".matmul"], AttentionSpec(name + ".matmul", *attn));
    }
  }
  for (const auto& fold : folds) {
    if (!integer_weights.count(fold.first + ".weight"))
      return absl::FailedPreconditionError(
          fold.first + ": the affine IRM folds only into a quantized qkv projection");
  }
  for (const auto& p : student.named_parameters()) {
    const std::string& key = p.key();
    if (integer_weights.count(key) || absl::StrContains(key, "_quant.")) continue;
    const std::string owner = key.substr(0, key.rfind('.'));
    if (auto fold = folds.find(owner); fold != folds.end()) {
      if (absl::EndsWith(key, ".bias")) {
        AddFloat(writer, key, p.value() * fold->second.scale + fold->second.shift);
      }
      continue;  // the weight went as codes above
    }
    // The affine IRM's own parameters are in the qkv projection now.
    const bool affine_irm_parameter =
        (absl::StrContains(key, ".q_norm.") || absl::StrContains(key, ".k_norm.")) &&
        folds.count(owner.substr(0, owner.rfind('.')) + ".qkv");
    if (!affine_irm_parameter) AddFloat(writer, key, p.value());
  }
  SetArtifactMetadata(writer, config, layers, provenance_json);
  return writer.WriteFile(output);
}

absl::StatusOr<Agreement> CompareWithEngine(Classifier& student, const ModelConfig& config,
                                            const std::string& artifact,
                                            const data::LabeledImages& data, int64_t count) {
  VITQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> engine, LoadModel(artifact, {}));
  torch::NoGradGuard no_grad;
  student.eval();
  Agreement a;
  a.images = std::min(count, data.count);
  int64_t agree = 0, engine_correct = 0, student_correct = 0;
  constexpr int64_t kBatch = 100;
  for (int64_t begin = 0; begin < a.images; begin += kBatch) {
    std::vector<int64_t> idx(std::min(kBatch, a.images - begin));
    std::iota(idx.begin(), idx.end(), begin);
    const torch::Tensor x =
        MakeBatch(data, idx, config.preprocess.mean[0], config.preprocess.std[0]).contiguous();
    const torch::Tensor ref = student.Forward(x).Inference().contiguous();
    Tensor images(Shape(x.sizes().begin(), x.sizes().end()));
    std::memcpy(images.data(), x.data_ptr<float>(), x.numel() * sizeof(float));
    VITQ_ASSIGN_OR_RETURN(Tensor logits, engine->Forward(images));
    const torch::Tensor served =
        torch::from_blob(logits.data(), {logits.dim(0), logits.dim(1)}, torch::kFloat32).clone();
    const torch::Tensor served_top1 = served.argmax(1), ref_top1 = ref.argmax(1);
    agree += served_top1.eq(ref_top1).sum().item<int64_t>();
    for (size_t i = 0; i < idx.size(); ++i) {
      const int64_t label = data.labels[idx[i]];
      engine_correct += served_top1[i].item<int64_t>() == label;
      student_correct += ref_top1[i].item<int64_t>() == label;
    }
    const double cos = F::cosine_similarity(served, ref, F::CosineSimilarityFuncOptions().dim(1))
                           .min()
                           .item<double>();
    a.min_cosine = std::min(a.min_cosine, cos);
  }
  student.train();
  const double n = static_cast<double>(std::max<int64_t>(1, a.images));
  a.top1_agreement = agree / n;
  a.engine_top1 = engine_correct / n;
  a.student_top1 = student_correct / n;
  return a;
}

}  // namespace vitq::training
