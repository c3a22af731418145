// The load test engine of `vitq-client load`: keeps a server busy with an InferenceClient and
// records what came back.
//
//   closed loop (rate_rps unset)  `concurrency` requests are outstanding at all times: each
//                                 completion immediately sends the next. Measures the
//                                 throughput the server sustains at that concurrency.
//   open loop (rate_rps set)      requests are sent at a constant rate whatever the server does,
//                                 as independent users would. At most `max_outstanding` are in
//                                 flight: a send that would exceed it is skipped (counted), and
//                                 one the pacing thread could not make on time is counted late.
//                                 Latency is measured from each request's *scheduled* send time,
//                                 so a lagging client cannot hide queueing (coordinated omission).
//
// The run stops sending after `requests` sends (open loop: scheduled sends, skipped included)
// or after `duration`, then waits for every outstanding RPC; GenerateLoad returns only when no
// callback is in flight any more. Warm-up requests go first, closed-loop at `concurrency`, and
// are not recorded.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tools/client/inference_client.h"

namespace vitq::client {

struct LoadOptions {
  // Closed loop: requests kept in flight. Also the warm-up concurrency. >= 1.
  int concurrency = 1;
  // Stop condition: exactly one of the two is set.
  std::optional<int64_t> requests;         // sends (open loop: scheduled sends)
  std::optional<absl::Duration> duration;  // sending window
  // Open loop when set: requests per second, > 0.
  std::optional<double> rate_rps;
  // Open loop: most requests in flight; sends beyond it are skipped.
  int max_outstanding = 10000;
  // Untimed requests sent (and awaited) before the measurement starts.
  int64_t warmup_requests = 0;
};

// What a measured run observed.
struct LoadStats {
  int64_t sent = 0;
  int64_t late = 0;       // open loop: sent more than kLateThreshold after their scheduled time
  int64_t skipped = 0;    // open loop: not sent because max_outstanding were in flight
  double duration_s = 0;  // first send to last completion
  std::vector<double> ok_latency_ms;     // one sample per OK request, in completion order
  std::map<std::string, int64_t> codes;  // status code name -> requests
  std::map<std::string, absl::Status> first_error;  // code name -> its first occurrence
  std::map<std::string, int64_t> variants;  // variant that answered (OK requests) -> requests
};

// A send this far behind schedule is counted late.
inline constexpr absl::Duration kLateThreshold = absl::Milliseconds(1);

// Runs warm-up, then the measured load, on `client` (which must have >= 1 request; requests
// are used round-robin). Blocks until every RPC it started has finished.
LoadStats GenerateLoad(InferenceClient& client, const LoadOptions& options);

}  // namespace vitq::client
