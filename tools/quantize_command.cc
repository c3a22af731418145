#include "tools/quantize_command.h"

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "backends/model.h"
#include "quant/ptq.h"
#include "tools/cli_common.h"

namespace vitq::cli {

CLI::App* AddQuantizeCommand(CLI::App& app, QuantizeFlags& f) {
  CLI::App* cmd = app.add_subcommand(
      "quantize",
      "Post-training quantization: calibrate a float checkpoint and write a quantized artifact\n"
      "(integer Linear layers; patch embedding and heads at 8 bits unless a profile says "
      "otherwise)");
  cmd->add_option("--model,-m", f.model,
                  "float checkpoint (.safetensors), or a preset for random weights")
      ->required();
  cmd->add_option("--arch", f.arch, "architecture preset for a bare checkpoint");
  cmd->add_option("--method", f.method,
                  "calibration: minmax (input min/max), percentile, or liu2021 (Liu et al. 2021: "
                  "similarity-aware search of weight and activation scales, bias correction)")
      ->check(CLI::IsMember({"minmax", "percentile", "liu2021"}));
  cmd->add_option("--candidates", f.search_candidates,
                  "liu2021: grid points per scale search, on [0.5, 1.2] x the initial scale")
      ->check(CLI::Range(2, 1000));
  cmd->add_option("--rounds", f.search_rounds, "liu2021: most alternations of the two searches")
      ->check(CLI::Range(1, 100));
  cmd->add_option("--search-rows", f.search_rows,
                  "liu2021: input rows (tokens) per layer, sampled uniformly from the calibration "
                  "set, on which the searches score candidates and bias correction measures the "
                  "error")
      ->check(CLI::Range(int64_t{16}, int64_t{1000000}));
  cmd->add_option("--search-act-range", f.search_act_range,
                  "liu2021: the activation range the search scales: percentile (default: the "
                  "--percentile range) or max (observed min/max, the paper's initial step)")
      ->check(CLI::IsMember({"max", "percentile"}));
  cmd->add_flag("--no-bias-correction", f.no_bias_correction, "liu2021: keep the float biases");
  cmd->add_option("--attention-samples", f.attention_samples,
                  "liu2021: per-head attention matrices (from the first calibration images) the "
                  "attention search scores candidates on")
      ->check(CLI::Range(1, 100000));
  auto* mp = cmd->add_flag("--mixed-precision", f.mixed_precision,
                           "liu2021: one bit-width per attention and per MLP block (weights and "
                           "activations), least nuclear-norm-weighted error under the budget");
  auto* avg = cmd->add_option("--avg-bits", f.avg_bits,
                              "mixed precision budget: the blocks' weights at this average")
                  ->check(CLI::Range(2.0, 8.0));
  auto* size = cmd->add_option("--size-budget-mb", f.size_budget_mb,
                               "mixed precision budget: the artifact's tensor megabytes")
                   ->check(CLI::PositiveNumber);
  avg->excludes(size);
  avg->needs(mp);
  size->needs(mp);
  cmd->add_option("--mp-sensitivity", f.mp_sensitivity,
                  "mixed precision: sigma of attention blocks from the attention map's nuclear "
                  "norm (the paper's) or from the block's output feature, like MLP blocks")
      ->check(CLI::IsMember({"attention-map", "output"}));
  cmd->add_option("--mp-bits", f.mp_bits, "mixed precision candidate bit-widths")
      ->delimiter(',')
      ->check(CLI::Range(2, 8));
  cmd->add_option("--mp-act-bits", f.mp_act_bits,
                  "mixed precision: every block's activations at these bits, only the weights "
                  "mixed (the budget counts weights); default: each block's weight bits")
      ->check(CLI::Range(2, 8))
      ->needs(mp);
  cmd->add_flag("--no-ranking", f.no_ranking,
                "liu2021: search the attention's q/k steps by similarity alone (no ranking loss)");
  cmd->add_option("--percentile", f.percentile,
                  "central percent of inputs kept by --method percentile, and the range "
                  "liu2021's activation search starts from")
      ->check(CLI::Range(50.0, 100.0));
  cmd->add_option("--wbits", f.wbits,
                  "weight bits of the transformer layers (2-8; 2-4 run on the low-bit kernels, "
                  "5-8 on oneDNN int8)")
      ->check(CLI::Range(2, 8));
  cmd->add_option("--abits", f.abits, "activation bits of the transformer layers (2..8)")
      ->check(CLI::Range(2, 8));
  cmd->add_option("--profile", f.profile, "per-layer bits (YAML: default, edge, layers)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--calib", f.calib,
                  "calibration images: fashion-mnist:train:N, idx:IMAGES,LABELS[:N], folder:DIR "
                  "(every JPEG/PNG/BMP/WebP in it), random:N");
  cmd->add_option("--seed", f.seed, "seed of random:N images and of preset weights");
  cmd->add_option("--output,-o", f.output, "artifact to write (.safetensors)")->required();
  return cmd;
}

int RunQuantize(const QuantizeFlags& f) {
  std::string model_path = f.model;
  std::optional<std::string> arch;
  if (!f.arch.empty()) arch = f.arch;
  if (!f.model.ends_with(".safetensors")) {  // a preset: quantize its random weights
    auto config = PresetConfig(f.model);
    if (!config.ok()) return Fail(config.status());
    model_path = f.output + ".float.safetensors";
    if (absl::Status s = WriteRandomCheckpoint(*config, f.seed, model_path); !s.ok())
      return Fail(s);
    arch.reset();
  }
  auto config = ResolveConfig(model_path, arch);
  if (!config.ok()) return Fail(config.status());
  quant::PtqOptions o;
  o.method = f.method;
  o.search_candidates = f.search_candidates;
  o.search_rounds = f.search_rounds;
  o.search_rows = f.search_rows;
  o.search_from_percentile = f.search_act_range == "percentile";
  o.attention_matrices = f.attention_samples;
  o.bias_correction = !f.no_bias_correction;
  o.ranking = !f.no_ranking;
  o.mixed_precision = f.mixed_precision;
  o.mixed.avg_bits = f.avg_bits;
  o.mixed.size_budget_mb = f.size_budget_mb;
  o.mixed.candidate_bits = f.mp_bits;
  o.mixed.act_bits = f.mp_act_bits;
  o.mixed.sensitivity = f.mp_sensitivity == "output" ? quant::Sensitivity::kOutput
                                                     : quant::Sensitivity::kAttentionMap;
  o.percentile = f.percentile;
  o.bits.all = {f.wbits, f.abits};
  if (!f.profile.empty()) {
    auto profile = quant::LoadBitProfile(f.profile, o.bits.all);
    if (!profile.ok()) return Fail(profile.status());
    o.bits = *profile;
  }
  o.calib_spec = f.calib;
  o.seed = f.seed;
  auto images = LoadImages(f.calib, *config, f.seed);
  if (!images.ok()) return Fail(images.status());
  auto result = quant::QuantizeCheckpoint(model_path, arch, *images, o, f.output);
  if (model_path != f.model) {
    std::filesystem::remove(model_path);
    std::filesystem::remove(CardPathFor(model_path));
  }
  if (!result.ok()) return Fail(result.status());
  int64_t bytes = std::filesystem::file_size(f.output);
  std::printf("wrote %s: %zu integer layers, %lld calibration images (%s), %.2f MB\n",
              f.output.c_str(), result->layers.size(), static_cast<long long>(result->calib_images),
              f.calib.c_str(), bytes / 1e6);
  for (const auto& [layer, spec] : result->layers) {
    if (spec.is_attention) {
      std::printf("  %-36s %s q_scale=%.6g k_scale=%.6g v_scale=%.6g probs_scale=%.6g\n",
                  layer.c_str(), SpecName(spec).c_str(), spec.attn.q_scale, spec.attn.k_scale,
                  spec.attn.v_scale, spec.attn.ProbsScale());
      continue;
    }
    std::printf("  %-36s %s act_scale=%.6g zero_point=%d\n", layer.c_str(), SpecName(spec).c_str(),
                spec.act.scale, spec.act.zero_point);
  }
  return 0;
}

}  // namespace vitq::cli
