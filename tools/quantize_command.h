// `vitq quantize`: post-training quantization of a float checkpoint into a quantized artifact.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace vitq::cli {

struct QuantizeFlags {
  std::string model;  // float checkpoint, or a preset name (random weights, for benchmarks)
  std::string arch;
  std::string method = "minmax";
  double percentile = 99.99;
  int wbits = 8;
  int abits = 8;
  std::string profile;
  std::string calib = "fashion-mnist:train:512";
  uint64_t seed = 0;
  int search_candidates = 20;
  int search_rounds = 3;
  int64_t search_rows = 256;
  std::string search_act_range = "percentile";
  int64_t attention_samples = 32;
  bool no_bias_correction = false;
  bool no_ranking = false;
  bool mixed_precision = false;
  double avg_bits = 0, size_budget_mb = 0;
  std::vector<int> mp_bits = {3, 4, 5, 6, 7, 8};
  int mp_act_bits = 0;  // 0: each block's weight bits
  std::string mp_sensitivity = "attention-map";
  std::string output;
};

CLI::App* AddQuantizeCommand(CLI::App& app, QuantizeFlags& flags);
int RunQuantize(const QuantizeFlags& flags);

}  // namespace vitq::cli
