// Router: picks the variant that serves a request, from a model's routing table.
//
// A RoutingTable is immutable; a change (Admin SetRouting, config reload) builds a new table and
// swaps it in atomically (ServedModel::SetRouting), so routing never blocks on a change and a
// request keeps the variant it was routed to (it holds a shared_ptr to it).
//
// Assignment: an explicit variant in the request wins. Otherwise a request with a routing key
// (ClassifyRequest.routing_key, KServe parameter "ab_key", gRPC metadata "x-vitq-ab-key") goes
// where weighted rendezvous hashing sends that key: each variant scores the key with
// -weight / ln(u), u = hash(key, variant) in (0, 1), and the highest score wins. Each variant
// receives its weight's share of keys, a key keeps its variant while the weights do not change,
// and changing one weight moves only the keys that must move. A request without a key goes to a
// variant drawn at random by weight.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/variant.h"

namespace vitq::server {

// The model's reference variant, which gets a sampled copy of routed requests (shadow traffic)
// so that every variant's answers can be compared with it.
struct RoutingShadow {
  std::string variant;    // empty: no shadow traffic
  double fraction = 0.0;  // of routed requests, in [0, 1]
};

class RoutingTable {
 public:
  struct Entry {
    std::shared_ptr<Variant> variant;
    double weight = 0;  // >= 0, not normalised
  };

  using Shadow = RoutingShadow;

  // INVALID_ARGUMENT unless every weight is finite and >= 0, one is > 0, variant names are
  // unique, and the shadow variant (if any) is one of the entries with a fraction in [0, 1].
  static absl::StatusOr<std::shared_ptr<const RoutingTable>> Create(std::vector<Entry> entries,
                                                                    int64_t generation,
                                                                    Shadow shadow = {});

  // The variant for a request without an explicit variant: by `routing_key` when non-empty, else
  // by `uniform01`, a random number in [0, 1).
  const std::shared_ptr<Variant>& Pick(const std::string& routing_key, double uniform01) const;

  // The variant named `name` (whatever its weight), or nullptr.
  std::shared_ptr<Variant> Find(const std::string& name) const;

  const std::vector<Entry>& entries() const { return entries_; }
  // Normalised share of `name`'s traffic in [0, 1]; 0 for unknown names.
  double Share(const std::string& name) const;
  int64_t generation() const { return generation_; }
  // When this table was created, microseconds since the Unix epoch.
  int64_t created_unix_us() const { return created_unix_us_; }
  const Shadow& shadow() const { return shadow_; }
  // The shadow reference variant, or nullptr when there is none.
  const std::shared_ptr<Variant>& shadow_reference() const { return shadow_reference_; }
  // "fp32=0.9 w8a8=0.1" (normalised shares; for logs).
  std::string Describe() const;

 private:
  RoutingTable(std::vector<Entry> entries, int64_t generation, Shadow shadow);

  std::vector<Entry> entries_;      // sorted by variant name
  std::vector<double> cumulative_;  // running sum of weights, for random picks
  double total_weight_ = 0;
  int64_t generation_ = 0;
  int64_t created_unix_us_ = 0;
  Shadow shadow_;
  std::shared_ptr<Variant> shadow_reference_;
};

}  // namespace vitq::server
