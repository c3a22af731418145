#include "tools/client/load_report.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace vitq::client {
namespace {

LatencySummary SummarizeLatency(std::vector<double> samples_ms) {
  std::sort(samples_ms.begin(), samples_ms.end());
  LatencySummary s;
  s.p50 = Percentile(samples_ms, 50);
  s.p90 = Percentile(samples_ms, 90);
  s.p99 = Percentile(samples_ms, 99);
  s.max = samples_ms.back();
  s.mean = std::accumulate(samples_ms.begin(), samples_ms.end(), 0.0) /
           static_cast<double>(samples_ms.size());
  return s;
}

// Entries of `counts`, largest count first (ties by name).
std::vector<std::pair<std::string, int64_t>> ByCountDescending(
    const std::map<std::string, int64_t>& counts) {
  std::vector<std::pair<std::string, int64_t>> entries(counts.begin(), counts.end());
  std::stable_sort(entries.begin(), entries.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  return entries;
}

double PercentOf(int64_t part, int64_t whole) {
  return whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole);
}

void AppendCodes(const LoadSummary& summary, std::string& out) {
  absl::StrAppend(&out, "status codes:\n");
  for (const auto& [code, count] : ByCountDescending(summary.codes)) {
    absl::StrAppendFormat(&out, "  %-20s %8d  %5.1f%%", code, count,
                          PercentOf(count, summary.sent));
    if (auto it = summary.first_error.find(code); it != summary.first_error.end()) {
      absl::StrAppend(&out, "  first: ", it->second.message());
    }
    absl::StrAppend(&out, "\n");
  }
}

void AppendVariants(const LoadSummary& summary, std::string& out) {
  absl::StrAppend(&out, "variants answering:", summary.variants.empty() ? " none\n" : "\n");
  for (const auto& [variant, count] : ByCountDescending(summary.variants)) {
    absl::StrAppendFormat(&out, "  %-20s %8d  %5.1f%%\n", variant, count,
                          PercentOf(count, summary.completed));
  }
}

nlohmann::ordered_json LatencyJson(const std::optional<LatencySummary>& latency) {
  nlohmann::ordered_json j;
  for (const char* key : {"p50", "p90", "p99", "max", "mean"}) j[key] = nullptr;
  if (!latency) return j;
  j["p50"] = latency->p50;
  j["p90"] = latency->p90;
  j["p99"] = latency->p99;
  j["max"] = latency->max;
  j["mean"] = latency->mean;
  return j;
}

}  // namespace

double Percentile(const std::vector<double>& sorted, double percent) {
  const double rank = std::ceil(percent / 100.0 * static_cast<double>(sorted.size()));
  const size_t index = static_cast<size_t>(std::max(rank, 1.0)) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

LoadSummary Summarize(LoadStats stats, bool open_loop) {
  LoadSummary summary;
  summary.open_loop = open_loop;
  summary.sent = stats.sent;
  summary.completed = static_cast<int64_t>(stats.ok_latency_ms.size());
  summary.late = stats.late;
  summary.skipped = stats.skipped;
  summary.duration_s = stats.duration_s;
  summary.throughput_rps =
      stats.duration_s > 0 ? static_cast<double>(summary.completed) / stats.duration_s : 0.0;
  summary.codes = std::move(stats.codes);
  summary.first_error = std::move(stats.first_error);
  summary.variants = std::move(stats.variants);
  if (!stats.ok_latency_ms.empty())
    summary.latency_ms = SummarizeLatency(std::move(stats.ok_latency_ms));
  return summary;
}

std::string FormatText(const LoadSummary& summary) {
  std::string out;
  absl::StrAppendFormat(&out, "requests: sent %d, completed %d (OK), %.3f s, %.1f completed/s\n",
                        summary.sent, summary.completed, summary.duration_s,
                        summary.throughput_rps);
  if (summary.open_loop) {
    absl::StrAppendFormat(&out,
                          "open loop: %d sent late (> %s behind schedule), %d skipped "
                          "(too many in flight)\n",
                          summary.late, absl::FormatDuration(kLateThreshold), summary.skipped);
  }
  AppendCodes(summary, out);
  if (summary.latency_ms) {
    const LatencySummary& l = *summary.latency_ms;
    absl::StrAppendFormat(&out,
                          "latency ms (OK requests): p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  "
                          "mean %.3f\n",
                          l.p50, l.p90, l.p99, l.max, l.mean);
  } else {
    absl::StrAppend(&out, "latency ms (OK requests): none completed\n");
  }
  AppendVariants(summary, out);
  return out;
}

std::string FormatJson(const LoadSummary& summary) {
  nlohmann::ordered_json j;
  j["sent"] = summary.sent;
  j["completed"] = summary.completed;
  j["duration_s"] = summary.duration_s;
  j["throughput_rps"] = summary.throughput_rps;
  j["codes"] = summary.codes;
  j["latency_ms"] = LatencyJson(summary.latency_ms);
  j["variants"] = summary.variants;
  if (summary.open_loop) {
    j["late"] = summary.late;
    j["skipped"] = summary.skipped;
  }
  return j.dump();
}

}  // namespace vitq::client
