// Turns the raw observations of a load test (LoadStats) into the figures vitq-client prints:
// counts, throughput, exact latency percentiles and the variants that answered, as text for
// people or as one JSON object for scripts.
//
// Percentiles are exact nearest-rank values over every OK sample (the samples are sorted, not
// binned): p is the smallest sample with at least p% of the samples <= it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tools/client/load_generator.h"

namespace vitq::client {

struct LatencySummary {  // milliseconds
  double p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
};

struct LoadSummary {
  bool open_loop = false;
  int64_t sent = 0;
  int64_t completed = 0;  // answered OK
  int64_t late = 0;       // open loop only
  int64_t skipped = 0;    // open loop only
  double duration_s = 0;
  double throughput_rps = 0;                        // completed / duration_s
  std::map<std::string, int64_t> codes;             // status code name -> requests
  std::map<std::string, absl::Status> first_error;  // code name -> its first occurrence
  std::optional<LatencySummary> latency_ms;         // none when no request completed
  std::map<std::string, int64_t> variants;          // variant -> OK requests
};

// Nearest-rank percentile of `sorted` (ascending, non-empty); `percent` in (0, 100].
double Percentile(const std::vector<double>& sorted, double percent);

LoadSummary Summarize(LoadStats stats, bool open_loop);

// Multi-line human-readable report.
std::string FormatText(const LoadSummary& summary);

// One JSON object: sent, completed, duration_s, throughput_rps, codes {name: count},
// latency_ms {p50, p90, p99, max, mean} (values null when nothing completed),
// variants {name: count}; open loop adds late and skipped.
std::string FormatJson(const LoadSummary& summary);

}  // namespace vitq::client
