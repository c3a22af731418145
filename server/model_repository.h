// The served models: for each model name its loaded variants and its current routing table.
//
//   auto repo = ModelRepository::Load(config, &metrics);     // loads and warms every variant
//   absl::StatusOr<Routed> r = (*repo)->Route("fmnist-deit", /*variant=*/"", /*key=*/"user-7");
//   r->variant->Submit(...);
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/metrics.h"
#include "server/repository_config.h"
#include "server/router.h"
#include "server/variant.h"

namespace vitq::server {

// Where a request goes.
struct Routed {
  std::shared_ptr<Variant> variant;
  int64_t routing_generation = 0;  // 0 when the request named its variant
};

class ServedModel {
 public:
  ServedModel(std::string name, std::shared_ptr<const RoutingTable> routing);

  const std::string& name() const { return name_; }

  // NOT_FOUND naming the model's variants when `variant` is not one of them.
  absl::StatusOr<Routed> Route(const std::string& variant, const std::string& routing_key) const;

  std::shared_ptr<const RoutingTable> routing() const ABSL_LOCKS_EXCLUDED(mu_);
  void SetRouting(std::shared_ptr<const RoutingTable> table) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const std::string name_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const RoutingTable> routing_ ABSL_GUARDED_BY(mu_);
};

class ModelRepository {
 public:
  // Loads every variant of every model (warmed up) in config order. The first failure is
  // returned, naming the model, variant and file; a `shadow` setting is refused (shadow traffic
  // is not implemented yet). `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<ModelRepository>> Load(const ServerConfig& config,
                                                               ServerMetrics* metrics);
  // A repository over variants built elsewhere (tests): model name → variants with weights.
  static absl::StatusOr<std::unique_ptr<ModelRepository>> FromVariants(
      const std::map<std::string, std::vector<RoutingTable::Entry>>& models);

  // nullptr for an unknown model.
  const ServedModel* Find(const std::string& model) const;
  // NOT_FOUND for an unknown model (listing the served ones) or variant.
  absl::StatusOr<Routed> Route(const std::string& model, const std::string& variant,
                               const std::string& routing_key) const;

  std::vector<const ServedModel*> models() const;
  // Every variant of every model, by model then variant name.
  std::vector<std::shared_ptr<Variant>> AllVariants() const;

  // Drains every variant's queue; returns false when some grace ran out.
  bool Drain(int64_t grace_us);

 private:
  std::map<std::string, std::unique_ptr<ServedModel>> models_;
};

}  // namespace vitq::server
