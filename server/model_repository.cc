#include "server/model_repository.h"

#include <atomic>
#include <cstdio>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vitq::server {
namespace {

// A uniform number in [0, 1) from a per-thread generator: routing must not share a lock.
double Uniform01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

std::string VariantNames(const RoutingTable& table) {
  std::vector<std::string> names;
  for (const auto& e : table.entries()) names.push_back(e.variant->name());
  return absl::StrJoin(names, ", ");
}

bool SameBatching(const BatcherOptions& a, const BatcherOptions& b) {
  return a.max_batch_size == b.max_batch_size &&
         a.preferred_batch_sizes == b.preferred_batch_sizes &&
         a.max_queue_delay_us == b.max_queue_delay_us && a.max_queue_size == b.max_queue_size &&
         a.default_timeout_us == b.default_timeout_us && a.priority_levels == b.priority_levels;
}

// Whether `loaded` still is what `wanted` describes; else `why` says what differs. An artifact
// rewritten in place (same path, new bytes) counts as changed.
bool SameSource(const Variant& loaded, const VariantConfig& wanted, std::string* why) {
  const VariantConfig& had = loaded.config();
  if (had.path != wanted.path || had.preset != wanted.preset) {
    *why = "new artifact";
  } else if (had.precision != wanted.precision || had.arch != wanted.arch) {
    *why = "new precision or arch";
  } else if (!wanted.path.empty()) {
    absl::StatusOr<std::string> sha = FileSha256(wanted.path);
    if (!sha.ok() || *sha != loaded.artifact_sha256()) *why = "artifact file changed";
  }
  return why->empty();
}

// Same variants with the same weights and shadow settings: nothing to publish.
bool SameRouting(const RoutingTable& a, const RoutingTable& b) {
  if (a.entries().size() != b.entries().size() || a.shadow().variant != b.shadow().variant ||
      a.shadow().fraction != b.shadow().fraction) {
    return false;
  }
  for (size_t i = 0; i < a.entries().size(); ++i) {
    if (a.entries()[i].variant != b.entries()[i].variant ||
        a.entries()[i].weight != b.entries()[i].weight) {
      return false;
    }
  }
  return true;
}

// Model settings that live outside the routing table (the adaptive policy).
bool SameModelSettings(const ModelEntry& a, const ModelEntry& b) {
  return a.adaptive == b.adaptive;
}

RoutingTable::Shadow ShadowOf(const ModelEntry& m) {
  if (!m.shadow) return {};
  return {m.shadow->variant, m.shadow->fraction};
}

absl::Status InModel(const std::string& model, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat("model '", model, "': ", status.message()));
}

}  // namespace

// ---- ServedModel ----

ServedModel::ServedModel(ModelEntry entry, std::shared_ptr<const RoutingTable> routing)
    : entry_(std::move(entry)) {
  SetRouting(std::move(routing));
}

std::shared_ptr<const RoutingTable> ServedModel::routing() const {
  absl::MutexLock lock(&mu_);
  return routing_;
}

void ServedModel::SetRouting(std::shared_ptr<const RoutingTable> table) {
  for (const auto& e : table->entries()) {
    if (e.variant->series().routing_weight) {
      e.variant->series().routing_weight->Set(table->Share(e.variant->name()));
    }
  }
  absl::MutexLock lock(&mu_);
  if (routing_) {
    for (const auto& e : routing_->entries()) {
      if (table->Find(e.variant->name()) != e.variant && e.variant->series().routing_weight) {
        e.variant->series().routing_weight->Set(0);
      }
    }
  }
  routing_ = std::move(table);
}

absl::StatusOr<Routed> ServedModel::Route(const std::string& variant,
                                          const std::string& routing_key) const {
  std::shared_ptr<const RoutingTable> table = routing();
  if (!variant.empty()) {
    std::shared_ptr<Variant> named = table->Find(variant);
    if (!named) {
      return absl::NotFoundError(absl::StrCat("model '", name(), "' has no variant '", variant,
                                              "' (it has: ", VariantNames(*table), ")"));
    }
    return Routed{std::move(named), 0, std::move(table)};
  }
  std::shared_ptr<Variant> picked = table->Pick(routing_key, Uniform01());
  const int64_t generation = table->generation();
  return Routed{std::move(picked), generation, std::move(table)};
}

// ---- ModelRepository: loading and lookup ----

ModelRepository::ModelRepository(ServerMetrics* metrics, int engine_threads)
    : metrics_(metrics), engine_threads_(engine_threads) {
  reaper_ = std::thread([this] { ReapRetired(); });
}

ModelRepository::~ModelRepository() {
  {
    absl::MutexLock lock(&retired_mu_);
    stopping_ = true;
  }
  reaper_.join();
}

absl::StatusOr<std::shared_ptr<Variant>> ModelRepository::LoadOne(const ModelEntry& m,
                                                                  const VariantConfig& v) const {
  std::fprintf(stderr, "vitq-server: loading model '%s' variant '%s' from %s\n", m.name.c_str(),
               v.name.c_str(), v.path.empty() ? ("preset " + v.preset).c_str() : v.path.c_str());
  absl::StatusOr<std::shared_ptr<Variant>> variant =
      Variant::Load(m.name, v, m.batching, metrics_, engine_threads_);
  if (!variant.ok()) return variant.status();
  std::fprintf(stderr, "vitq-server: model '%s' variant '%s' ready: %s, %s, %lld classes\n",
               m.name.c_str(), v.name.c_str(), ArchName((*variant)->model_config().arch).c_str(),
               (*variant)->precision().c_str(), static_cast<long long>((*variant)->num_classes()));
  return variant;
}

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::Load(const ServerConfig& config,
                                                                       ServerMetrics* metrics) {
  auto repo = std::unique_ptr<ModelRepository>(new ModelRepository(metrics, config.engine_threads));
  for (const ModelEntry& m : config.models) {
    std::vector<RoutingTable::Entry> entries;
    for (const VariantConfig& v : m.variants) {
      absl::StatusOr<std::shared_ptr<Variant>> variant = repo->LoadOne(m, v);
      if (!variant.ok()) return variant.status();
      entries.push_back({std::move(*variant), v.weight});
    }
    auto table = RoutingTable::Create(std::move(entries), /*generation=*/1, ShadowOf(m));
    if (!table.ok()) return InModel(m.name, table.status());
    auto served = std::make_shared<ServedModel>(m, *table);
    if (metrics) metrics->SetRoutingGeneration(m.name, 1);
    absl::MutexLock lock(&repo->mu_);
    repo->models_[m.name] = std::move(served);
  }
  return repo;
}

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::FromVariants(
    const std::map<std::string, std::vector<RoutingTable::Entry>>& models) {
  auto repo = std::unique_ptr<ModelRepository>(new ModelRepository(nullptr, 0));
  for (const auto& [name, entries] : models) {
    auto table = RoutingTable::Create(entries, /*generation=*/1);
    if (!table.ok()) return InModel(name, table.status());
    ModelEntry entry;
    entry.name = name;
    if (!entries.empty() && entries.front().variant)
      entry.batching = entries.front().variant->batching();
    absl::MutexLock lock(&repo->mu_);
    repo->models_[name] = std::make_shared<ServedModel>(std::move(entry), *table);
  }
  return repo;
}

std::shared_ptr<ServedModel> ModelRepository::FindMutable(const std::string& model) const {
  absl::MutexLock lock(&mu_);
  auto it = models_.find(model);
  return it == models_.end() ? nullptr : it->second;
}

std::shared_ptr<const ServedModel> ModelRepository::Find(const std::string& model) const {
  return FindMutable(model);
}

absl::StatusOr<Routed> ModelRepository::Route(const std::string& model, const std::string& variant,
                                              const std::string& routing_key) const {
  std::shared_ptr<const ServedModel> served = Find(model);
  if (!served) {
    std::vector<std::string> names;
    for (const auto& m : models()) names.push_back(m->name());
    return absl::NotFoundError(
        absl::StrCat("unknown model '", model, "' (served: ", absl::StrJoin(names, ", "), ")"));
  }
  return served->Route(variant, routing_key);
}

std::vector<std::shared_ptr<const ServedModel>> ModelRepository::models() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<const ServedModel>> out;
  for (const auto& [name, model] : models_) out.push_back(model);
  return out;
}

std::vector<std::shared_ptr<Variant>> ModelRepository::AllVariants() const {
  std::vector<std::shared_ptr<Variant>> out;
  for (const auto& model : models())
    for (const auto& e : model->routing()->entries()) out.push_back(e.variant);
  return out;
}

bool ModelRepository::Drain(int64_t grace_us) {
  // Drain starts every variant's drain at once, so one grace period covers them all.
  std::vector<std::shared_ptr<Variant>> variants = AllVariants();
  {
    absl::MutexLock lock(&retired_mu_);
    variants.insert(variants.end(), retired_.begin(), retired_.end());
  }
  std::vector<std::thread> drains;
  std::atomic<bool> all_ran{true};
  for (const std::shared_ptr<Variant>& v : variants) {
    drains.emplace_back([&all_ran, v, grace_us] {
      if (!v->Drain(grace_us).ok()) all_ran = false;
    });
  }
  for (std::thread& t : drains) t.join();
  return all_ran;
}

void ModelRepository::OnModelsChanged(std::function<void()> callback) {
  absl::MutexLock lock(&mu_);
  models_changed_ = std::move(callback);
}

// ---- Hot switch ----

void ModelRepository::Publish(ServedModel& model, std::shared_ptr<const RoutingTable> table) {
  std::fprintf(stderr, "vitq-server: model '%s' routing generation %lld: %s\n",
               model.name().c_str(), static_cast<long long>(table->generation()),
               table->Describe().c_str());
  if (metrics_) metrics_->SetRoutingGeneration(model.name(), table->generation());
  model.SetRouting(std::move(table));
}

absl::StatusOr<std::shared_ptr<const RoutingTable>> ModelRepository::SetRouting(
    const std::string& model, const RoutingChange& change) {
  absl::MutexLock change_lock(&change_mu_);
  std::shared_ptr<ServedModel> served = FindMutable(model);
  if (!served) return absl::NotFoundError(absl::StrCat("unknown model '", model, "'"));
  const std::shared_ptr<const RoutingTable> old = served->routing();
  if (change.expected_generation != 0 && change.expected_generation != old->generation()) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", model, "' is at routing generation ", old->generation(), ", not ",
                     change.expected_generation, " (someone else changed it)"));
  }
  for (const auto& [name, weight] : change.weights) {
    if (!old->Find(name)) {
      return absl::NotFoundError(absl::StrCat("model '", model, "' has no variant '", name,
                                              "' (it has: ", VariantNames(*old), ")"));
    }
  }
  std::vector<RoutingTable::Entry> entries;
  for (const auto& e : old->entries()) {
    auto it = change.weights.find(e.variant->name());
    entries.push_back({e.variant, it == change.weights.end() ? 0.0 : it->second});
  }
  auto table = RoutingTable::Create(std::move(entries), old->generation() + 1, change.shadow);
  if (!table.ok()) return InModel(model, table.status());
  Publish(*served, *table);
  return *table;
}

absl::StatusOr<std::shared_ptr<Variant>> ModelRepository::LoadVariant(const std::string& model,
                                                                      const VariantConfig& config,
                                                                      bool replace) {
  absl::MutexLock change_lock(&change_mu_);
  std::shared_ptr<ServedModel> served = FindMutable(model);
  if (!served) return absl::NotFoundError(absl::StrCat("unknown model '", model, "'"));
  std::shared_ptr<Variant> previous = served->routing()->Find(config.name);
  if (previous && !replace) {
    return absl::AlreadyExistsError(absl::StrCat("model '", model, "' already has a variant '",
                                                 config.name, "' (replace it to reload it)"));
  }
  if (!(config.weight >= 0)) return absl::InvalidArgumentError("weight must be >= 0");
  // Loaded and warmed up before any routing changes; a failure leaves everything as it was.
  absl::StatusOr<std::shared_ptr<Variant>> loaded = LoadOne(served->entry(), config);
  if (!loaded.ok()) return loaded.status();
  const std::shared_ptr<const RoutingTable> old = served->routing();
  std::vector<RoutingTable::Entry> entries;
  for (const auto& e : old->entries()) {
    if (e.variant->name() != config.name) entries.push_back(e);
  }
  entries.push_back({*loaded, config.weight});
  auto table = RoutingTable::Create(std::move(entries), old->generation() + 1, old->shadow());
  if (!table.ok()) return InModel(model, table.status());
  Publish(*served, *table);
  if (previous) Retire(std::move(previous));
  return *loaded;
}

absl::StatusOr<std::shared_ptr<const RoutingTable>> ModelRepository::UnloadVariant(
    const std::string& model, const std::string& variant) {
  absl::MutexLock change_lock(&change_mu_);
  std::shared_ptr<ServedModel> served = FindMutable(model);
  if (!served) return absl::NotFoundError(absl::StrCat("unknown model '", model, "'"));
  const std::shared_ptr<const RoutingTable> old = served->routing();
  std::shared_ptr<Variant> leaving = old->Find(variant);
  if (!leaving) {
    return absl::NotFoundError(absl::StrCat("model '", model, "' has no variant '", variant,
                                            "' (it has: ", VariantNames(*old), ")"));
  }
  if (old->shadow().variant == variant) {
    return absl::FailedPreconditionError(absl::StrCat("variant '", variant,
                                                      "' is the shadow reference of model '", model,
                                                      "'; change the shadow settings first"));
  }
  std::vector<RoutingTable::Entry> entries;
  for (const auto& e : old->entries()) {
    if (e.variant != leaving) entries.push_back(e);
  }
  auto table = RoutingTable::Create(std::move(entries), old->generation() + 1, old->shadow());
  if (!table.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot unload variant '", variant, "' of model '", model,
                     "': no other variant would get traffic; route some elsewhere first"));
  }
  Publish(*served, *table);
  Retire(std::move(leaving));
  return *table;
}

absl::StatusOr<std::vector<std::string>> ModelRepository::Reload(const ServerConfig& config) {
  absl::MutexLock change_lock(&change_mu_);
  struct Plan {
    ModelEntry entry;
    std::shared_ptr<ServedModel> existing;
    std::shared_ptr<const RoutingTable> table;
  };
  std::vector<Plan> plans;
  std::vector<std::string> changes;
  // 1. Load what is new or changed; nothing is published until everything loaded.
  for (const ModelEntry& m : config.models) {
    Plan plan{m, FindMutable(m.name), nullptr};
    const std::shared_ptr<const RoutingTable> old =
        plan.existing ? plan.existing->routing() : nullptr;
    const bool same_batching =
        plan.existing && SameBatching(plan.existing->entry().batching, m.batching);
    std::vector<RoutingTable::Entry> entries;
    for (const VariantConfig& v : m.variants) {
      std::shared_ptr<Variant> current = old ? old->Find(v.name) : nullptr;
      std::string why = current ? "" : "new variant";
      if (current && !same_batching) why = "new batching settings";
      if (current && why.empty() && SameSource(*current, v, &why)) {
        entries.push_back({current, v.weight});
        continue;
      }
      absl::StatusOr<std::shared_ptr<Variant>> loaded = LoadOne(m, v);
      if (!loaded.ok()) return loaded.status();
      changes.push_back(absl::StrCat(m.name, ": loaded variant ", v.name, " (", why, ")"));
      entries.push_back({std::move(*loaded), v.weight});
    }
    auto table =
        RoutingTable::Create(std::move(entries), old ? old->generation() + 1 : 1, ShadowOf(m));
    if (!table.ok()) return InModel(m.name, table.status());
    plan.table = (old && SameRouting(*old, **table)) ? old : *table;
    plans.push_back(std::move(plan));
  }
  // 2. Publish: every model gets its new table (a new ServedModel when its settings changed).
  std::vector<std::shared_ptr<Variant>> still_routed;
  std::vector<std::shared_ptr<ServedModel>> removed;
  for (Plan& plan : plans) {
    for (const auto& e : plan.table->entries()) still_routed.push_back(e.variant);
    if (!plan.existing) {
      changes.push_back(absl::StrCat(plan.entry.name, ": new model"));
    } else if (plan.table == plan.existing->routing()) {
      if (SameModelSettings(plan.existing->entry(), plan.entry)) continue;
      changes.push_back(absl::StrCat(plan.entry.name, ": new adaptive policy"));
    } else {
      changes.push_back(absl::StrCat(plan.entry.name, ": routing generation ",
                                     plan.table->generation(), ": ", plan.table->Describe()));
    }
    auto served = std::make_shared<ServedModel>(plan.entry, plan.table);
    Publish(*served, plan.table);
    absl::MutexLock lock(&mu_);
    models_[plan.entry.name] = std::move(served);
  }
  std::function<void()> models_changed;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = models_.begin(); it != models_.end();) {
      const bool kept = std::any_of(plans.begin(), plans.end(),
                                    [&](const Plan& p) { return p.entry.name == it->first; });
      if (kept) {
        ++it;
        continue;
      }
      changes.push_back(absl::StrCat(it->first, ": model removed"));
      removed.push_back(it->second);
      it = models_.erase(it);
    }
    models_changed = models_changed_;
  }
  // 3. Retire every variant that no table routes to any more.
  for (const Plan& plan : plans) {
    if (!plan.existing) continue;
    for (const auto& e : plan.existing->routing()->entries()) {
      if (std::find(still_routed.begin(), still_routed.end(), e.variant) == still_routed.end()) {
        changes.push_back(absl::StrCat(plan.entry.name, ": retired variant ", e.variant->name()));
        Retire(e.variant);
      }
    }
  }
  for (const auto& model : removed)
    for (const auto& e : model->routing()->entries()) Retire(e.variant);
  if (models_changed) models_changed();
  return changes;
}

// ---- Retirement ----

void ModelRepository::Retire(std::shared_ptr<Variant> variant) {
  if (variant->series().routing_weight) variant->series().routing_weight->Set(0);
  std::fprintf(stderr,
               "vitq-server: model '%s' variant '%s' retired: freed after its last request\n",
               variant->model_name().c_str(), variant->name().c_str());
  absl::MutexLock lock(&retired_mu_);
  retired_.push_back(std::move(variant));
}

void ModelRepository::ReapRetired() {
  absl::MutexLock lock(&retired_mu_);
  while (!stopping_) {
    retired_mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(100));
    // Only this list holds them: no request, routing table or shadow copy can reach them.
    std::vector<std::shared_ptr<Variant>> unused;
    for (auto it = retired_.begin(); it != retired_.end();) {
      if (it->use_count() == 1) {
        unused.push_back(std::move(*it));
        it = retired_.erase(it);
      } else {
        ++it;
      }
    }
    if (unused.empty()) continue;
    retired_mu_.Unlock();
    for (auto& v : unused) {
      std::fprintf(stderr, "vitq-server: model '%s' variant '%s' freed\n", v->model_name().c_str(),
                   v->name().c_str());
      v.reset();  // joins its batcher thread: never on that thread itself
    }
    retired_mu_.Lock();
  }
}

}  // namespace vitq::server
