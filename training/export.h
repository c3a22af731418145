// Export of a trained classifier as a vitq checkpoint: OUT.safetensors (float32 tensors under
// their timm names) and OUT.yaml (the model card it was trained from, plus training provenance),
// which `vitq` and the server load directly.
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"
#include "training/nets.h"

namespace vitq::training {

// `card_yaml`: the training card text; `labels_path`: its labels file as resolved from the
// training card (re-written relative to the exported card); `provenance`: keys written under
// `training:` in the exported card (command, seed, epochs, wall time, accuracy). `stem` is OUT
// without extension.
absl::Status ExportCheckpoint(torch::nn::Module& model, const std::string& card_yaml,
                              const std::string& name, const std::string& labels_path,
                              const std::map<std::string, std::string>& provenance,
                              const std::string& stem);

// Loads the float tensors of a vitq checkpoint (safetensors, timm names) into `model`'s
// parameters; every parameter must be present with its shape.
absl::Status LoadCheckpoint(torch::nn::Module& model, const std::string& path);

// Saves / loads a module's parameters and buffers (LibTorch archive), e.g. the CNN teacher.
absl::Status SaveModule(torch::nn::Module& module, const std::string& path);
absl::Status LoadModule(torch::nn::Module& module, const std::string& path);

}  // namespace vitq::training
