#include "server/repository_config.h"

#include <gtest/gtest.h>

namespace vitq::server {
namespace {

constexpr char kGood[] = R"(
server: {listen: "127.0.0.1:0", metrics_listen: "", drain_grace_s: 5}
models:
  - name: fmnist-deit
    labels: ../config/labels/fashion-mnist.txt
    batching: {max_batch_size: 16, preferred_batch_sizes: [8, 16], max_queue_delay_us: 500}
    variants:
      - {name: fp32, path: ../models/fmnist-deit.safetensors, weight: 0.9}
      - {name: w8a8, path: /abs/q.safetensors, weight: 0.1}
    shadow: {variant: w8a8, fraction: 0.25}
  - name: deit-s
    variants:
      - {name: bf16, path: deit_s.safetensors, arch: deit_small, precision: bf16}
)";

TEST(RepositoryConfigTest, ParsesAndResolvesPaths) {
  auto c = ParseServerConfig(kGood, "/srv/vitq/config");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "127.0.0.1:0");
  EXPECT_EQ(c->metrics_listen, "");
  EXPECT_EQ(c->drain_grace_s, 5);
  ASSERT_EQ(c->models.size(), 2u);
  const ModelEntry& m = c->models[0];
  EXPECT_EQ(m.labels, "/srv/vitq/config/labels/fashion-mnist.txt");
  EXPECT_EQ(m.batching.name, "fmnist-deit");
  EXPECT_EQ(m.batching.max_batch_size, 16);
  EXPECT_EQ(m.batching.preferred_batch_sizes, (std::vector<int>{8, 16}));
  EXPECT_EQ(m.batching.max_queue_delay_us, 500);
  EXPECT_EQ(m.batching.max_queue_size, 256);  // default kept
  EXPECT_EQ(m.variants[0].path, "/srv/vitq/models/fmnist-deit.safetensors");
  EXPECT_EQ(m.variants[1].path, "/abs/q.safetensors");
  EXPECT_DOUBLE_EQ(m.variants[1].weight, 0.1);
  ASSERT_TRUE(m.shadow.has_value());
  EXPECT_EQ(m.shadow->variant, "w8a8");
  EXPECT_EQ(c->models[1].variants[0].precision, "bf16");
  EXPECT_EQ(c->models[1].variants[0].arch, "deit_small");
  EXPECT_DOUBLE_EQ(c->models[1].variants[0].weight, 1.0);  // default
}

void ExpectError(const std::string& yaml, const std::string& phrase) {
  auto c = ParseServerConfig(yaml, "/d");
  ASSERT_FALSE(c.ok()) << yaml;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find(phrase), std::string::npos) << c.status();
}

TEST(RepositoryConfigTest, ErrorsNameTheEntry) {
  ExpectError("models: [", "not valid YAML");
  ExpectError("server: {listen: x}\n", "needs a list of models");
  ExpectError("models:\n  - {variants: [{name: a, path: p}]}\n", "models[0]: name is required");
  ExpectError("models:\n  - {name: m}\n", "models[0] 'm': needs a list of variants");
  ExpectError("models:\n  - {name: m, variants: [{name: a}]}\n",
              "models[0] 'm': variants[0]: give either path (an artifact) or preset");
  ExpectError("models:\n  - {name: m, variants: [{name: a, path: p, preset: deit_small}]}\n",
              "give either path (an artifact) or preset");
  ExpectError(
      "server: {tls: {cert: a.pem}}\nmodels:\n  - {name: m, variants: [{name: a, path: p}]}\n",
      "server: tls: needs both cert and key");
  ExpectError("models:\n  - {name: m, variants: [{name: a, path: p, weight: -1}]}\n",
              "variants[0]: weight must be >= 0");
  ExpectError("models:\n  - {name: m, variants: [{name: a, path: p, weight: 0}]}\n",
              "routing weight > 0");
  ExpectError("models:\n  - {name: m, variants: [{name: a, path: p}, {name: a, path: q}]}\n",
              "variant 'a' appears twice");
  ExpectError("models:\n  - {name: m, variants: [{name: a, path: p, precision: int3}]}\n",
              "fp32 or bf16");
  ExpectError("models:\n  - {name: m, variants: [{name: a, path: p}], shadow: {variant: b}}\n",
              "shadow variant 'b' is not a variant");
  ExpectError(
      "models:\n  - {name: m, batching: {max_batch_size: 0}, variants: [{name: a, path: p}]}\n",
      "models[0] 'm': batching:");
  ExpectError(
      "models:\n  - {name: m, batching: {max_batch_size: many}, variants: [{name: a, path: p}]}\n",
      "'max_batch_size' has the wrong type");
  ExpectError(
      "models:\n  - {name: m, variants: [{name: a, path: p}]}\n  - {name: m, variants: [{name: a, "
      "path: p}]}\n",
      "model 'm' appears twice");
  ExpectError("server: {listen: ''}\nmodels:\n  - {name: m, variants: [{name: a, path: p}]}\n",
              "listen is required");
}

// A misspelt key must not fall back to its default silently, at any level.
TEST(RepositoryConfigTest, UnknownKeysAreErrors) {
  const std::string model = "models:\n  - {name: m, variants: [{name: a, path: p}]}\n";
  ExpectError("sever: {listen: x}\n" + model, "config: unknown key 'sever'");
  ExpectError("server: {listen: x, metrics: y}\n" + model, "server: unknown key 'metrics'");
  ExpectError("server: {listen: x, tls: {certificate: a}}\n" + model,
              "server: tls: unknown key 'certificate'");
  ExpectError("server: {listen: x, admin: {token: t}}\n" + model,
              "server: admin: unknown key 'token'");
  ExpectError("models:\n  - {name: m, lables: l, variants: [{name: a, path: p}]}\n",
              "models[0] 'm': unknown key 'lables'");
  ExpectError(
      "models:\n  - {name: m, batching: {max_queue_delay: 0}, variants: [{name: a, path: p}]}\n",
      "batching: unknown key 'max_queue_delay' (known here: max_batch_size,");
  ExpectError("models:\n  - {name: m, variants: [{name: a, path: p, wieght: 3}]}\n",
              "variants[0]: unknown key 'wieght'");
  ExpectError(
      "models:\n  - {name: m, variants: [{name: a, path: p}], shadow: {variant: a, rate: 1}}\n",
      "shadow: unknown key 'rate'");
  ExpectError(
      "models:\n  - {name: m, variants: [{name: a, path: p}, {name: b, path: q}],\n"
      "     shadow: {variant: a}, adaptive: {variants: [a, b], slo_ms: 5}}\n",
      "adaptive: unknown key 'slo_ms'");
}

TEST(RepositoryConfigTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadServerConfig("/nonexistent/vitq.yaml").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace vitq::server
