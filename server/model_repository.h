// The served models: for each model name its loaded variants and its current routing table, and
// the hot switch — routing changes, variants loaded and unloaded, config reloads — at run time.
//
//   auto repo = ModelRepository::Load(config, &metrics);     // loads and warms every variant
//   absl::StatusOr<Routed> r = (*repo)->Route("fmnist-deit", /*variant=*/"", /*key=*/"user-7");
//   r->variant->Submit(...);
//   (*repo)->SetRouting("fmnist-deit", {.weights = {{"w8a8", 90}, {"w4a4", 10}}});
//
// Availability: a change builds everything it needs first (a new variant is loaded and warmed
// up before any traffic moves), then swaps immutable routing tables in; a failure changes
// nothing. A request keeps the variant it was routed to (it holds a reference); a variant taken
// out of routing is retired and freed on the repository's own thread after its last request —
// never on its own batcher thread, which its destructor joins.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
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
  int64_t routing_generation = 0;             // 0 when the request named its variant
  std::shared_ptr<const RoutingTable> table;  // the table that routed it (shadow settings)
};

class ServedModel {
 public:
  ServedModel(ModelEntry entry, std::shared_ptr<const RoutingTable> routing);

  const std::string& name() const { return entry_.name; }
  // Its settings from the config (batching, shadow, adaptive policy; variants as configured).
  const ModelEntry& entry() const { return entry_; }

  // NOT_FOUND naming the model's variants when `variant` is not one of them.
  absl::StatusOr<Routed> Route(const std::string& variant, const std::string& routing_key) const;

  std::shared_ptr<const RoutingTable> routing() const ABSL_LOCKS_EXCLUDED(mu_);
  // Swaps the table in and updates the variants' routing-weight gauges.
  void SetRouting(std::shared_ptr<const RoutingTable> table) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const ModelEntry entry_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const RoutingTable> routing_ ABSL_GUARDED_BY(mu_);
};

// A new routing for one model (Admin SetRouting).
struct RoutingChange {
  std::map<std::string, double> weights;  // variant → weight; variants not named get 0
  RoutingTable::Shadow shadow;
  int64_t expected_generation = 0;  // non-zero: apply only if the table is at this generation
};

class ModelRepository {
 public:
  // Loads every variant of every model (warmed up) in config order. The first failure is
  // returned, naming the model, variant and file. `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<ModelRepository>> Load(const ServerConfig& config,
                                                               ServerMetrics* metrics);
  // A repository over variants built elsewhere (tests): model name → variants with weights.
  static absl::StatusOr<std::unique_ptr<ModelRepository>> FromVariants(
      const std::map<std::string, std::vector<RoutingTable::Entry>>& models);

  ~ModelRepository();

  // nullptr for an unknown model.
  std::shared_ptr<const ServedModel> Find(const std::string& model) const;
  // NOT_FOUND for an unknown model (listing the served ones) or variant.
  absl::StatusOr<Routed> Route(const std::string& model, const std::string& variant,
                               const std::string& routing_key) const;

  // Sorted by name.
  std::vector<std::shared_ptr<const ServedModel>> models() const;
  // Every routed variant of every model, by model then variant name.
  std::vector<std::shared_ptr<Variant>> AllVariants() const;

  // Drains every variant's queue (retired ones too); returns false when some grace ran out.
  bool Drain(int64_t grace_us);

  // ---- Hot switch. Changes are serialised; each either applies completely or not at all. ----

  // Replaces the weights and shadow settings of `model`: NOT_FOUND (model or variant),
  // INVALID_ARGUMENT (weights), FAILED_PRECONDITION (expected_generation differs).
  absl::StatusOr<std::shared_ptr<const RoutingTable>> SetRouting(const std::string& model,
                                                                 const RoutingChange& change);
  // Loads and warms `config` as a new variant of `model`, then routes `config.weight` to it.
  // ALREADY_EXISTS when the name is taken (unless `replace`: the new one takes its place and
  // the old one is retired).
  absl::StatusOr<std::shared_ptr<Variant>> LoadVariant(const std::string& model,
                                                       const VariantConfig& config, bool replace);
  // Takes `variant` out of routing and retires it. FAILED_PRECONDITION when it is the model's
  // shadow reference or the only variant with traffic.
  absl::StatusOr<std::shared_ptr<const RoutingTable>> UnloadVariant(const std::string& model,
                                                                    const std::string& variant);
  // Makes the served models match `config`: new models and new or changed variants (path,
  // precision, batching, or the artifact's bytes) are loaded first; then every routing table is
  // replaced; removed variants and models are retired. Returns the changes, one line each.
  absl::StatusOr<std::vector<std::string>> Reload(const ServerConfig& config);

  // Called after the set of models changed (e.g. to publish per-model health).
  void OnModelsChanged(std::function<void()> callback);

 private:
  ModelRepository(ServerMetrics* metrics, int engine_threads);
  std::shared_ptr<ServedModel> FindMutable(const std::string& model) const;
  absl::StatusOr<std::shared_ptr<Variant>> LoadOne(const ModelEntry& model,
                                                   const VariantConfig& config) const;
  // Publishes `table` as the routing of `model` (generation gauge included).
  void Publish(ServedModel& model, std::shared_ptr<const RoutingTable> table);
  // Frees `variant` on the reaper thread once nothing else holds it.
  void Retire(std::shared_ptr<Variant> variant);
  void ReapRetired();

  ServerMetrics* const metrics_;
  const int engine_threads_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<ServedModel>> models_ ABSL_GUARDED_BY(mu_);
  std::function<void()> models_changed_ ABSL_GUARDED_BY(mu_);

  absl::Mutex change_mu_;  // one change at a time; held while variants load

  absl::Mutex retired_mu_;
  std::vector<std::shared_ptr<Variant>> retired_ ABSL_GUARDED_BY(retired_mu_);
  bool stopping_ ABSL_GUARDED_BY(retired_mu_) = false;
  std::thread reaper_;
};

}  // namespace vitq::server
