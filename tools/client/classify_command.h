// vitq-client classify: one RPC per image file, top-k classes printed per image.
//
//   vitq-client classify --model deit_tiny [--variant int8] [--top-k 5] [--api kserve] a.jpg b.png
//
// Output per image (stdout):
//   a.jpg
//     0.8123  tabby cat (class 281)
//     ...
//     deit_tiny/int8, queue 0.120 ms, compute 3.400 ms, total 3.900 ms, id vitq-1a2b3c4d-7
//   (kserve: no timing). The id can be labeled later: vitq-client feedback --request-id ID.
// --label L (once per image, in order) sends each image's true class for labeled accuracy.
// A failed image is reported on stderr and the others are still classified; the exit code is 1
// if any image failed.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "tools/client/connection.h"

namespace vitq::client {

struct ClassifyFlags {
  ConnectionFlags connection;
  std::string model;                // required
  std::string variant;              // empty: the server's router chooses
  int32_t top_k = 5;                // classes printed per image
  int64_t timeout_ms = 0;           // per-RPC deadline; 0 = none
  std::string api = "classify";     // "classify" or "kserve"
  std::vector<std::string> images;  // encoded image files, one RPC each
  std::vector<std::string> labels;  // empty, or the true class of each image
};

// Adds the `classify` subcommand to `app`, its options bound to `flags` (which must outlive
// parsing).
CLI::App* AddClassifyCommand(CLI::App& app, ClassifyFlags& flags);

// Returns the process exit code.
int RunClassify(const ClassifyFlags& flags);

// --model, --variant, --api and --top-k, shared with `load` so both read the same.
void AddModelFlags(CLI::App* command, std::string* model, std::string* variant, std::string* api,
                   int32_t* top_k);

}  // namespace vitq::client
