#include "server/repository_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace vitq::server {
namespace {

namespace fs = std::filesystem;

absl::Status Error(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

std::string Resolve(const std::string& dir, const std::string& path) {
  if (path.empty() || fs::path(path).is_absolute()) return path;
  return (fs::path(dir) / path).lexically_normal().string();
}

// Reads `key` into `out` when present; yaml-cpp's conversion errors become INVALID_ARGUMENT.
template <typename T>
absl::Status Read(const YAML::Node& node, const char* key, const std::string& where, T& out) {
  if (!node[key]) return absl::OkStatus();
  try {
    out = node[key].as<T>();
  } catch (const YAML::Exception&) {
    return Error(where, absl::StrCat("'", key, "' has the wrong type"));
  }
  return absl::OkStatus();
}

// A misspelt key would otherwise be ignored and its default used without a word.
absl::Status OnlyKnownKeys(const YAML::Node& n, const std::string& where,
                           std::initializer_list<const char*> known) {
  for (const auto& entry : n) {
    const std::string key = entry.first.Scalar();
    if (std::none_of(known.begin(), known.end(), [&](const char* k) { return key == k; })) {
      std::string list;
      for (const char* k : known) absl::StrAppend(&list, list.empty() ? "" : ", ", k);
      return Error(where, absl::StrCat("unknown key '", key, "' (known here: ", list, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseBatching(const YAML::Node& n, const std::string& where, BatcherOptions& b) {
  if (!n) return absl::OkStatus();
  if (!n.IsMap()) return Error(where, "batching must be a mapping");
  if (absl::Status k =
          OnlyKnownKeys(n, where,
                        {"max_batch_size", "preferred_batch_sizes", "max_queue_delay_us",
                         "max_queue_size", "default_timeout_us", "priority_levels"});
      !k.ok())
    return k;
  absl::Status s = absl::OkStatus();
  s.Update(Read(n, "max_batch_size", where, b.max_batch_size));
  s.Update(Read(n, "preferred_batch_sizes", where, b.preferred_batch_sizes));
  s.Update(Read(n, "max_queue_delay_us", where, b.max_queue_delay_us));
  s.Update(Read(n, "max_queue_size", where, b.max_queue_size));
  s.Update(Read(n, "default_timeout_us", where, b.default_timeout_us));
  s.Update(Read(n, "priority_levels", where, b.priority_levels));
  if (!s.ok()) return s;
  if (absl::Status v = ValidateBatcherOptions(b); !v.ok())
    return Error(where, std::string(v.message()));
  return absl::OkStatus();
}

absl::StatusOr<VariantConfig> ParseVariant(const YAML::Node& n, const std::string& where,
                                           const std::string& dir) {
  if (!n.IsMap()) return Error(where, "a variant must be a mapping");
  if (absl::Status k =
          OnlyKnownKeys(n, where, {"name", "path", "preset", "arch", "precision", "weight"});
      !k.ok())
    return k;
  VariantConfig v;
  absl::Status s = absl::OkStatus();
  s.Update(Read(n, "name", where, v.name));
  s.Update(Read(n, "path", where, v.path));
  s.Update(Read(n, "preset", where, v.preset));
  s.Update(Read(n, "arch", where, v.arch));
  s.Update(Read(n, "precision", where, v.precision));
  s.Update(Read(n, "weight", where, v.weight));
  if (!s.ok()) return s;
  if (v.name.empty()) return Error(where, "name is required");
  if (v.path.empty() == v.preset.empty())
    return Error(where, "give either path (an artifact) or preset (random weights)");
  if (v.precision != "fp32" && v.precision != "bf16")
    return Error(where, "precision must be fp32 or bf16");
  if (!(v.weight >= 0)) return Error(where, "weight must be >= 0");
  v.path = Resolve(dir, v.path);
  return v;
}

absl::StatusOr<AdaptivePolicy> ParseAdaptive(const YAML::Node& n, const std::string& where,
                                             const std::set<std::string>& variant_names) {
  if (!n.IsMap()) return Error(where, "must be a mapping");
  if (absl::Status k =
          OnlyKnownKeys(n, where,
                        {"variants", "p99_slo_ms", "agreement_floor", "min_comparisons",
                         "interval_s", "step_down_at", "step_up_below", "calm_intervals"});
      !k.ok())
    return k;
  AdaptivePolicy p;
  absl::Status s = absl::OkStatus();
  s.Update(Read(n, "variants", where, p.variants));
  s.Update(Read(n, "p99_slo_ms", where, p.p99_slo_ms));
  s.Update(Read(n, "agreement_floor", where, p.agreement_floor));
  s.Update(Read(n, "min_comparisons", where, p.min_comparisons));
  s.Update(Read(n, "interval_s", where, p.interval_s));
  s.Update(Read(n, "step_down_at", where, p.step_down_at));
  s.Update(Read(n, "step_up_below", where, p.step_up_below));
  s.Update(Read(n, "calm_intervals", where, p.calm_intervals));
  if (!s.ok()) return s;
  for (const std::string& v : p.variants) {
    if (!variant_names.count(v)) return Error(where, absl::StrCat("'", v, "' is not a variant"));
  }
  if (absl::Status v = ValidateAdaptivePolicy(p); !v.ok())
    return Error(where, std::string(v.message()));
  return p;
}

absl::StatusOr<ModelEntry> ParseModel(const YAML::Node& n, const std::string& index_where,
                                      const std::string& dir) {
  if (!n.IsMap()) return Error(index_where, "a model must be a mapping");
  ModelEntry m;
  if (absl::Status s = Read(n, "name", index_where, m.name); !s.ok()) return s;
  if (m.name.empty()) return Error(index_where, "name is required");
  const std::string where = absl::StrCat(index_where, " '", m.name, "'");
  if (absl::Status k =
          OnlyKnownKeys(n, where, {"name", "labels", "batching", "variants", "shadow", "adaptive"});
      !k.ok())
    return k;
  if (absl::Status s = Read(n, "labels", where, m.labels); !s.ok()) return s;
  m.labels = Resolve(dir, m.labels);
  m.batching.name = m.name;
  if (absl::Status s = ParseBatching(n["batching"], where + ": batching", m.batching); !s.ok())
    return s;
  const YAML::Node variants = n["variants"];
  if (!variants || !variants.IsSequence() || variants.size() == 0)
    return Error(where, "needs a list of variants");
  std::set<std::string> names;
  double total_weight = 0;
  for (size_t i = 0; i < variants.size(); ++i) {
    auto v = ParseVariant(variants[i], absl::StrCat(where, ": variants[", i, "]"), dir);
    if (!v.ok()) return v.status();
    if (!names.insert(v->name).second)
      return Error(where, absl::StrCat("variant '", v->name, "' appears twice"));
    total_weight += v->weight;
    m.variants.push_back(std::move(*v));
  }
  if (!(total_weight > 0)) return Error(where, "at least one variant needs a routing weight > 0");
  if (const YAML::Node sh = n["shadow"]) {
    if (!sh.IsMap()) return Error(where + ": shadow", "must be a mapping");
    if (absl::Status k = OnlyKnownKeys(sh, where + ": shadow", {"variant", "fraction"}); !k.ok())
      return k;
    ShadowConfig shadow;
    absl::Status s = Read(sh, "variant", where + ": shadow", shadow.variant);
    s.Update(Read(sh, "fraction", where + ": shadow", shadow.fraction));
    if (!s.ok()) return s;
    if (!names.count(shadow.variant))
      return Error(where, absl::StrCat("shadow variant '", shadow.variant, "' is not a variant"));
    if (!(shadow.fraction >= 0 && shadow.fraction <= 1))
      return Error(where, "shadow fraction must be in [0, 1]");
    m.shadow = shadow;
  }
  if (const YAML::Node ad = n["adaptive"]) {
    auto policy = ParseAdaptive(ad, where + ": adaptive", names);
    if (!policy.ok()) return policy.status();
    if (!m.shadow) {
      return Error(where, "adaptive needs `shadow` (a reference variant) to measure agreement");
    }
    m.adaptive = std::move(*policy);
  }
  return m;
}

absl::Status ParseTls(const YAML::Node& n, const std::string& dir, TlsConfig& tls) {
  if (!n) return absl::OkStatus();
  if (!n.IsMap()) return Error("server: tls", "must be a mapping");
  if (absl::Status k = OnlyKnownKeys(n, "server: tls", {"cert", "key", "client_ca"}); !k.ok())
    return k;
  absl::Status s = absl::OkStatus();
  s.Update(Read(n, "cert", "server: tls", tls.cert));
  s.Update(Read(n, "key", "server: tls", tls.key));
  s.Update(Read(n, "client_ca", "server: tls", tls.client_ca));
  if (!s.ok()) return s;
  if (tls.cert.empty() != tls.key.empty()) return Error("server: tls", "needs both cert and key");
  if (!tls.client_ca.empty() && tls.cert.empty())
    return Error("server: tls", "client_ca (mutual TLS) needs cert and key");
  tls.cert = Resolve(dir, tls.cert);
  tls.key = Resolve(dir, tls.key);
  tls.client_ca = Resolve(dir, tls.client_ca);
  return absl::OkStatus();
}

absl::Status ParseAdmin(const YAML::Node& n, const std::string& dir, AdminConfig& admin) {
  if (!n) return absl::OkStatus();
  if (!n.IsMap()) return Error("server: admin", "must be a mapping");
  if (absl::Status k = OnlyKnownKeys(n, "server: admin", {"listen", "token_file"}); !k.ok())
    return k;
  absl::Status s = absl::OkStatus();
  s.Update(Read(n, "listen", "server: admin", admin.listen));
  s.Update(Read(n, "token_file", "server: admin", admin.token_file));
  if (!s.ok()) return s;
  admin.token_file = Resolve(dir, admin.token_file);
  return absl::OkStatus();
}

absl::Status ParseServerSection(const YAML::Node& n, const std::string& dir, ServerConfig& c) {
  if (!n) return absl::OkStatus();
  if (!n.IsMap()) return Error("server", "must be a mapping");
  if (absl::Status k =
          OnlyKnownKeys(n, "server",
                        {"listen", "metrics_listen", "max_message_bytes", "drain_grace_s",
                         "engine_threads", "watch_config", "tls", "admin"});
      !k.ok())
    return k;
  if (absl::Status s = ParseTls(n["tls"], dir, c.tls); !s.ok()) return s;
  if (absl::Status s = ParseAdmin(n["admin"], dir, c.admin); !s.ok()) return s;
  absl::Status s = absl::OkStatus();
  s.Update(Read(n, "listen", "server", c.listen));
  s.Update(Read(n, "metrics_listen", "server", c.metrics_listen));
  s.Update(Read(n, "max_message_bytes", "server", c.max_message_bytes));
  s.Update(Read(n, "drain_grace_s", "server", c.drain_grace_s));
  s.Update(Read(n, "engine_threads", "server", c.engine_threads));
  s.Update(Read(n, "watch_config", "server", c.watch_config));
  if (!s.ok()) return s;
  if (c.listen.empty()) return Error("server", "listen is required");
  if (c.max_message_bytes < 1024 || c.max_message_bytes > INT32_MAX)
    return Error("server", "max_message_bytes must be in [1024, 2147483647]");
  if (!(c.drain_grace_s >= 0 && c.drain_grace_s <= 86400))
    return Error("server", "drain_grace_s must be in [0, 86400]");
  if (c.engine_threads < 0 || c.engine_threads > 1024)
    return Error("server", "engine_threads must be in [0, 1024]");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text,
                                               const std::string& config_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("not valid YAML: ", e.what()));
  }
  if (!root.IsMap()) return absl::InvalidArgumentError("the config must be a YAML mapping");
  if (absl::Status k = OnlyKnownKeys(root, "config", {"server", "models"}); !k.ok()) return k;
  ServerConfig c;
  if (absl::Status s = ParseServerSection(root["server"], config_dir, c); !s.ok()) return s;
  const YAML::Node models = root["models"];
  if (!models || !models.IsSequence() || models.size() == 0) {
    return absl::InvalidArgumentError("models: the config needs a list of models");
  }
  std::set<std::string> names;
  for (size_t i = 0; i < models.size(); ++i) {
    auto m = ParseModel(models[i], absl::StrCat("models[", i, "]"), config_dir);
    if (!m.ok()) return m.status();
    if (!names.insert(m->name).second)
      return Error("models", absl::StrCat("model '", m->name, "' appears twice"));
    c.models.push_back(std::move(*m));
  }
  return c;
}

absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  auto config = ParseServerConfig(text.str(), fs::path(path).parent_path().string());
  if (!config.ok())
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  config->source_path = path;
  return config;
}

}  // namespace vitq::server
