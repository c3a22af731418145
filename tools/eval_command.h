// vitq eval: accuracy of a model on a labeled dataset.
//
//   vitq eval --model m.safetensors --dataset fashion-mnist:test [--limit N] [--batch 64]
//             [--labels FILE] [--precision bf16] [--logits-out logits.safetensors]
//
// Each image goes through the model card's evaluation transform (the same function the server
// and `vitq classify` use; gray is replicated for 3-channel models), batches run through
// Model::Forward, and the report goes to stdout:
//
//   top1=0.XXXX, top5=0.XXXX      fractions of images whose label is the first / among the
//                                 first five logits (ties go to the lower class index)
//   images=N
//   img_per_s=X                   images / (preprocessing + forward wall time)
//   a confusion matrix            rows = true class, columns = predicted class; an "other"
//                                 column when the model has classes the dataset lacks
//   per-class accuracy
//
// --logits-out writes tensors `logits` [N, classes] f32 and `labels` [N] u8 (safetensors), for
// comparisons with other frameworks.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "tools/cli_common.h"

namespace vitq::cli {

struct EvalFlags {
  ModelFlags model;
  std::string dataset;      // a data spec (preprocessing/dataset.h), e.g. fashion-mnist:test
  int64_t limit = 0;        // evaluate the first `limit` images; 0 = all
  int64_t batch = 64;       // images per Forward call
  std::string labels_path;  // class names, one per line; default: the model card's
  std::string logits_out;   // safetensors file for the logits and labels; empty = none
};

// Adds the `eval` subcommand to `app`, its options bound to `flags` (which must outlive parsing).
CLI::App* AddEvalCommand(CLI::App& app, EvalFlags& flags);

// Runs the evaluation; returns the process exit code (1 with a message on stderr on error).
int RunEval(const EvalFlags& flags);

}  // namespace vitq::cli
