#include "server/router.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace vitq::server {
namespace {

// A stable 64-bit mix of (key, variant): FNV-1a over both, then a SplitMix64 finaliser. Must not
// change between releases or processes (absl::Hash is salted per process), so that every replica
// sends one key to the same variant.
uint64_t StableHash(const std::string& key, const std::string& variant) {
  uint64_t h = 1469598103934665603ull;
  auto feed = [&h](const std::string& s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;  // separator: ("ab","c") != ("a","bc")
  };
  feed(key);
  feed(variant);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const RoutingTable>> RoutingTable::Create(std::vector<Entry> entries,
                                                                         int64_t generation,
                                                                         Shadow shadow) {
  double total = 0;
  std::set<std::string> names;
  for (const Entry& e : entries) {
    if (!e.variant) return absl::InvalidArgumentError("routing table entry without a variant");
    if (!names.insert(e.variant->name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("variant '", e.variant->name(), "' appears twice"));
    }
    if (!std::isfinite(e.weight) || e.weight < 0) {
      return absl::InvalidArgumentError(absl::StrCat("weight of variant '", e.variant->name(),
                                                     "' must be finite and >= 0, got ", e.weight));
    }
    total += e.weight;
  }
  if (!(total > 0)) return absl::InvalidArgumentError("at least one weight must be > 0");
  if (!shadow.variant.empty() && !names.count(shadow.variant)) {
    return absl::InvalidArgumentError(
        absl::StrCat("shadow variant '", shadow.variant, "' is not one of the model's variants"));
  }
  if (!(shadow.fraction >= 0 && shadow.fraction <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("shadow fraction must be in [0, 1], got ", shadow.fraction));
  }
  if (shadow.variant.empty()) shadow.fraction = 0;
  return std::shared_ptr<const RoutingTable>(
      new RoutingTable(std::move(entries), generation, std::move(shadow)));
}

RoutingTable::RoutingTable(std::vector<Entry> entries, int64_t generation, Shadow shadow)
    : entries_(std::move(entries)),
      generation_(generation),
      created_unix_us_(absl::ToUnixMicros(absl::Now())),
      shadow_(std::move(shadow)) {
  if (!shadow_.variant.empty()) shadow_reference_ = Find(shadow_.variant);
  std::sort(entries_.begin(), entries_.end(),
            [](const Entry& a, const Entry& b) { return a.variant->name() < b.variant->name(); });
  for (const Entry& e : entries_) {
    total_weight_ += e.weight;
    cumulative_.push_back(total_weight_);
  }
}

const std::shared_ptr<Variant>& RoutingTable::Pick(const std::string& routing_key,
                                                   double uniform01) const {
  if (routing_key.empty()) {
    const double target = uniform01 * total_weight_;
    auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), target);
    size_t index = std::min<size_t>(it - cumulative_.begin(), entries_.size() - 1);
    while (entries_[index].weight == 0) --index;  // only at the top end, through rounding
    return entries_[index].variant;
  }
  size_t best = 0;
  double best_score = -1;
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].weight <= 0) continue;
    // u in (0, 1): the top 53 bits, offset by half a step so that it is never 0 or 1.
    const double u =
        (static_cast<double>(StableHash(routing_key, entries_[i].variant->name()) >> 11) + 0.5) /
        9007199254740992.0;
    const double score = -entries_[i].weight / std::log(u);
    if (score > best_score) {
      best_score = score;
      best = i;
    }
  }
  return entries_[best].variant;
}

std::shared_ptr<Variant> RoutingTable::Find(const std::string& name) const {
  for (const Entry& e : entries_)
    if (e.variant->name() == name) return e.variant;
  return nullptr;
}

std::string RoutingTable::Describe() const {
  std::vector<std::string> parts;
  for (const Entry& e : entries_) {
    parts.push_back(
        absl::StrCat(e.variant->name(), "=", absl::SixDigits(e.weight / total_weight_)));
  }
  std::string out = absl::StrJoin(parts, " ");
  if (!shadow_.variant.empty()) {
    absl::StrAppend(&out, " (shadow: ", shadow_.fraction, " to ", shadow_.variant, ")");
  }
  return out;
}

double RoutingTable::Share(const std::string& name) const {
  for (const Entry& e : entries_)
    if (e.variant->name() == name) return e.weight / total_weight_;
  return 0;
}

}  // namespace vitq::server
