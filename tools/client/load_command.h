// vitq-client load: a load test (our perf_analyzer). See load_generator.h for closed and open
// loop, load_report.h for what is printed.
//
//   vitq-client load --model deit_tiny --image cat.jpg --concurrency 8 --duration 30
//   vitq-client load --model deit_tiny --tensor-shape 3,224,224 --rate 200 --requests 6000 --json
//
// Exit code 0 even when some requests failed (overload tests expect errors); 1 when none
// succeeded or the channel did not connect; 2 for a bad command line.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "tools/client/connection.h"

namespace vitq::client {

struct LoadFlags {
  ConnectionFlags connection;
  std::string model;             // required
  std::string variant;           // empty: the server's router chooses
  std::string api = "classify";  // "classify" or "kserve"
  int32_t top_k = 5;             // classes asked for per request
  int64_t timeout_ms = 0;        // per-RPC deadline; 0 = none
  // Input: exactly one of the two.
  std::vector<std::string> images;    // encoded image files, sent round-robin
  std::vector<int64_t> tensor_shape;  // (C, H, W) of a fixed pseudo-random tensor
  // 0 = not given: closed loop keeps 1 request in flight, open loop caps at
  // kDefaultOpenLoopMaxOutstanding.
  int concurrency = 0;
  // Stop condition: exactly one of the two (0 = not given).
  int64_t requests = 0;
  double duration_s = 0;
  double rate_rps = 0;          // > 0: open loop at this rate
  int64_t warmup_requests = 0;  // sent first, not measured
  bool json = false;            // one JSON object instead of the text report
};

inline constexpr int kDefaultOpenLoopMaxOutstanding = 10000;

// Adds the `load` subcommand to `app`, its options bound to `flags` (which must outlive parsing).
CLI::App* AddLoadCommand(CLI::App& app, LoadFlags& flags);

// Returns the process exit code.
int RunLoad(const LoadFlags& flags);

}  // namespace vitq::client
