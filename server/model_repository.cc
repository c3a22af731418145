#include "server/model_repository.h"

#include <atomic>
#include <cstdio>
#include <thread>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vitq::server {
namespace {

// A uniform number in [0, 1) from a per-thread generator: routing must not share a lock.
double Uniform01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

}  // namespace

ServedModel::ServedModel(std::string name, std::shared_ptr<const RoutingTable> routing)
    : name_(std::move(name)), routing_(std::move(routing)) {}

std::shared_ptr<const RoutingTable> ServedModel::routing() const {
  absl::MutexLock lock(&mu_);
  return routing_;
}

void ServedModel::SetRouting(std::shared_ptr<const RoutingTable> table) {
  absl::MutexLock lock(&mu_);
  routing_ = std::move(table);
}

absl::StatusOr<Routed> ServedModel::Route(const std::string& variant,
                                          const std::string& routing_key) const {
  const std::shared_ptr<const RoutingTable> table = routing();
  if (!variant.empty()) {
    std::shared_ptr<Variant> named = table->Find(variant);
    if (!named) {
      std::vector<std::string> names;
      for (const auto& e : table->entries()) names.push_back(e.variant->name());
      return absl::NotFoundError(absl::StrCat("model '", name_, "' has no variant '", variant,
                                              "' (it has: ", absl::StrJoin(names, ", "), ")"));
    }
    return Routed{std::move(named), 0};
  }
  return Routed{table->Pick(routing_key, Uniform01()), table->generation()};
}

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::Load(const ServerConfig& config,
                                                                       ServerMetrics* metrics) {
  std::map<std::string, std::vector<RoutingTable::Entry>> models;
  for (const ModelEntry& m : config.models) {
    if (m.shadow) {
      return absl::UnimplementedError(absl::StrCat(
          "model '", m.name, "': shadow traffic is not implemented yet; remove `shadow`"));
    }
    for (const VariantConfig& v : m.variants) {
      std::fprintf(stderr, "vitq-server: loading model '%s' variant '%s' from %s\n",
                   m.name.c_str(), v.name.c_str(),
                   v.path.empty() ? ("preset " + v.preset).c_str() : v.path.c_str());
      absl::StatusOr<std::shared_ptr<Variant>> variant = Variant::Load(m.name, v, m.batching, metrics, config.engine_threads);
      if (!variant.ok()) return variant.status();
      std::fprintf(stderr, "vitq-server: model '%s' variant '%s' ready: %s, %s, %lld classes\n",
                   m.name.c_str(), v.name.c_str(),
                   ArchName((*variant)->model_config().arch).c_str(),
                   (*variant)->precision().c_str(),
                   static_cast<long long>((*variant)->num_classes()));
      models[m.name].push_back({std::move(*variant), v.weight});
    }
  }
  return FromVariants(models);
}

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::FromVariants(
    const std::map<std::string, std::vector<RoutingTable::Entry>>& models) {
  auto repo = std::unique_ptr<ModelRepository>(new ModelRepository());
  for (const auto& [name, entries] : models) {
    auto table = RoutingTable::Create(entries, /*generation=*/1);
    if (!table.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", name, "': ", table.status().message()));
    }
    repo->models_[name] = std::make_unique<ServedModel>(name, *table);
  }
  return repo;
}

const ServedModel* ModelRepository::Find(const std::string& model) const {
  auto it = models_.find(model);
  return it == models_.end() ? nullptr : it->second.get();
}

absl::StatusOr<Routed> ModelRepository::Route(const std::string& model,
                                              const std::string& variant,
                                              const std::string& routing_key) const {
  const ServedModel* served = Find(model);
  if (!served) {
    std::vector<std::string> names;
    for (const auto& [name, unused] : models_) names.push_back(name);
    return absl::NotFoundError(absl::StrCat("unknown model '", model,
                                            "' (served: ", absl::StrJoin(names, ", "), ")"));
  }
  return served->Route(variant, routing_key);
}

std::vector<const ServedModel*> ModelRepository::models() const {
  std::vector<const ServedModel*> out;
  for (const auto& [name, model] : models_) out.push_back(model.get());
  return out;
}

std::vector<std::shared_ptr<Variant>> ModelRepository::AllVariants() const {
  std::vector<std::shared_ptr<Variant>> out;
  for (const auto& [name, model] : models_)
    for (const auto& e : model->routing()->entries()) out.push_back(e.variant);
  return out;
}

bool ModelRepository::Drain(int64_t grace_us) {
  // Drain starts every variant's drain at once, so one grace period covers them all.
  std::vector<std::shared_ptr<Variant>> variants = AllVariants();
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

}  // namespace vitq::server
