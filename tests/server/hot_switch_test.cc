// The hot switch end to end, in process over loopback: the Admin service (token, routing
// changes, loading and unloading variants, config reloads), shadow comparisons with a reference
// variant, labeled accuracy and Feedback. The server is started from a real config file whose
// variants are random "tiny" checkpoints written to a temporary folder, so reloads and loads go
// through the same code as in production.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "backends/model.h"
#include "tests/server/server_test_util.h"

namespace vitq::server::testing {
namespace {

namespace fs = std::filesystem;
using v1::Admin;

constexpr char kToken[] = "s3cret-token";
constexpr uint64_t kSeedC = 3;

// The config file of these tests: variants name → (file, weight), optional shadow line.
struct VariantSpec {
  std::string name;
  std::string file;
  double weight = 0;
};

class HotSwitchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / absl::StrCat("vitq_hot_switch_", getpid(), "_", ++counter_);
    fs::create_directories(dir_);
    WriteFile(dir_ / "token", absl::StrCat(kToken, "\n"));
    for (const auto& [file, seed] :
         {std::pair{"a.safetensors", kSeedA}, std::pair{"b.safetensors", kSeedB},
          std::pair{"c.safetensors", kSeedC}}) {
      ASSERT_TRUE(WriteRandomCheckpoint(TinyConfig(), seed, (dir_ / file).string()).ok());
    }
    ASSERT_TRUE(
        WriteRandomCheckpoint(SlowConfig(), kSeedA, (dir_ / "slow.safetensors").string()).ok());
    // Class names come from the label file the model card names.
    std::string labels;
    for (const std::string& label : kLabels) absl::StrAppend(&labels, label, "\n");
    WriteFile(dir_ / "labels.txt", labels);
    for (const char* card : {"a.yaml", "b.yaml", "c.yaml", "slow.yaml"}) {
      std::ofstream(dir_ / card, std::ios::app) << "labels: labels.txt\n";
    }
    WriteFile(dir_ / "broken.safetensors", "not a safetensors file at all");
  }

  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }

  static void WriteFile(const fs::path& path, const std::string& text) {
    std::ofstream(path) << text;
  }

  // The YAML of a server with the admin service and model "tiny" with `variants`.
  std::string ConfigText(const std::vector<VariantSpec>& variants, const std::string& extra = "") {
    std::string text =
        "server:\n  listen: 127.0.0.1:0\n  metrics_listen: ''\n  drain_grace_s: 5\n"
        "  admin: {listen: 127.0.0.1:0, token_file: token}\n"
        "models:\n  - name: tiny\n    batching: {max_batch_size: 4, max_queue_delay_us: 0, "
        "max_queue_size: 1024}\n    variants:\n";
    for (const VariantSpec& v : variants) {
      absl::StrAppend(&text, "      - {name: ", v.name, ", path: ", v.file, ", weight: ", v.weight,
                      "}\n");
    }
    return text + extra;
  }

  void StartServer(const std::string& config_text) {
    WriteFile(dir_ / "config.yaml", config_text);
    absl::StatusOr<ServerConfig> config = LoadServerConfig((dir_ / "config.yaml").string());
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<std::unique_ptr<VitqServer>> server = VitqServer::Start(*config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_GT(server_->admin_port(), 0);
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                       grpc::InsecureChannelCredentials());
    classifier_ = v1::Classifier::NewStub(channel);
    admin_ = Admin::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->admin_port()),
                                                grpc::InsecureChannelCredentials()));
  }

  // A context for an admin call with `token` (none when empty) and a deadline.
  static std::unique_ptr<grpc::ClientContext> AdminContext(const std::string& token = kToken) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    if (!token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
    return context;
  }

  grpc::Status SetWeights(const std::map<std::string, double>& weights, v1::RoutingTable* table,
                          int64_t expected_generation = 0, const std::string& shadow = "",
                          double shadow_fraction = 0) {
    v1::SetRoutingRequest request;
    request.set_model(kModel);
    for (const auto& [name, w] : weights) (*request.mutable_weights())[name] = w;
    request.set_expected_generation(expected_generation);
    request.set_shadow_variant(shadow);
    request.set_shadow_fraction(shadow_fraction);
    return admin_->SetRouting(AdminContext().get(), request, table);
  }

  v1::StatsResponse Stats() {
    v1::StatsRequest request;
    request.set_model(kModel);
    v1::StatsResponse response;
    EXPECT_TRUE(admin_->Stats(AdminContext().get(), request, &response).ok());
    return response;
  }

  static const v1::VariantStats* StatsOf(const v1::StatsResponse& stats,
                                         const std::string& variant) {
    for (const auto& v : stats.variants())
      if (v.variant() == variant) return &v;
    return nullptr;
  }

  // Classifies image `seed` (a tensor), optionally on a named variant and with a true label.
  grpc::Status ClassifyImage(uint32_t seed, ClassifyResponse* response,
                             const std::string& variant = "", const std::string& label = "") {
    ClassifyRequest request =
        TensorClassifyRequest(RandomImages(1, seed), {1, kImageSize, kImageSize});
    request.set_variant(variant);
    request.set_label(label);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    return classifier_->Classify(&context, request, response);
  }

  // The top-1 class a random tiny model with weights `seed` gives image `image_seed`.
  static int64_t ExpectedTop1(uint64_t seed, uint32_t image_seed,
                              const ModelConfig& shape = TinyConfig()) {
    absl::StatusOr<std::unique_ptr<Model>> model =
        RandomModel(shape, seed, UniformPlan(Precision::kFp32));
    EXPECT_TRUE(model.ok());
    const std::vector<float> image = RandomImages(1, image_seed);
    Tensor input({1, 1, kImageSize, kImageSize});
    std::copy(image.begin(), image.end(), input.data());
    absl::StatusOr<Tensor> logits = (*model)->Forward(input);
    EXPECT_TRUE(logits.ok());
    return ArgMax(logits->data(), kClasses);
  }

  fs::path dir_;
  static inline int counter_ = 0;
  std::unique_ptr<VitqServer> server_;
  std::unique_ptr<v1::Classifier::Stub> classifier_;
  std::unique_ptr<Admin::Stub> admin_;
};

TEST_F(HotSwitchTest, AdminCallsWithoutTheRightTokenAreUnauthenticated) {
  StartServer(ConfigText({{"a", "a.safetensors", 1}}));
  v1::ListModelsRequest request;
  v1::ListModelsResponse response;
  EXPECT_EQ(admin_->ListModels(AdminContext("").get(), request, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(admin_->ListModels(AdminContext("wrong").get(), request, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  v1::RoutingTable table;
  v1::SetRoutingRequest set;
  set.set_model(kModel);
  (*set.mutable_weights())["a"] = 1;
  EXPECT_EQ(admin_->SetRouting(AdminContext("s3cret").get(), set, &table).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  ASSERT_TRUE(admin_->ListModels(AdminContext().get(), request, &response).ok());
  ASSERT_EQ(response.models_size(), 1);
  EXPECT_EQ(response.models(0).name(), kModel);
  EXPECT_EQ(response.models(0).routing().generation(), 1);
}

TEST_F(HotSwitchTest, SetRoutingMovesTrafficAndValidates) {
  StartServer(ConfigText({{"a", "a.safetensors", 1}, {"b", "b.safetensors", 0}}));
  ClassifyResponse response;
  ASSERT_TRUE(ClassifyImage(1, &response).ok());
  EXPECT_EQ(response.variant(), "a");

  v1::RoutingTable table;
  ASSERT_TRUE(SetWeights({{"a", 0}, {"b", 1}}, &table).ok());
  EXPECT_EQ(table.generation(), 2);
  for (uint32_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(ClassifyImage(i, &response).ok());
    EXPECT_EQ(response.variant(), "b");
    EXPECT_EQ(response.routing_generation(), 2);
  }
  // An explicit variant still wins.
  ASSERT_TRUE(ClassifyImage(1, &response, "a").ok());
  EXPECT_EQ(response.variant(), "a");

  EXPECT_EQ(SetWeights({{"a", 1}}, &table, /*expected_generation=*/1).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(SetWeights({{"zzz", 1}}, &table).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(SetWeights({{"a", 0}, {"b", 0}}, &table).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(SetWeights({{"a", -1}, {"b", 1}}, &table).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(SetWeights({{"a", 1}}, &table, 0, "nope", 0.5).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // None of the refused changes took effect.
  v1::GetRoutingRequest get;
  get.set_model(kModel);
  ASSERT_TRUE(admin_->GetRouting(AdminContext().get(), get, &table).ok());
  EXPECT_EQ(table.generation(), 2);
  EXPECT_EQ(table.weights().at("b"), 1);
}

// 16 clients classify continuously while routing switches 20 times and a variant is loaded and
// unloaded: not one request may fail.
TEST_F(HotSwitchTest, TwentySwitchesUnderLoadFailNoRequest) {
  StartServer(ConfigText({{"a", "a.safetensors", 1}, {"b", "b.safetensors", 0}}));
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::mutex seen_mu;
  std::set<std::string> variants_seen;
  std::vector<std::thread> clients;
  for (int t = 0; t < 16; ++t) {
    clients.emplace_back([&, t] {
      uint32_t i = 0;
      while (!stop) {
        ClassifyResponse response;
        grpc::Status s = ClassifyImage(t * 1000 + i++, &response);
        if (s.ok()) {
          ++ok;
          std::lock_guard<std::mutex> lock(seen_mu);
          variants_seen.insert(response.variant());
        } else {
          ++failed;
          ADD_FAILURE() << "request failed during a switch: " << s.error_message();
        }
      }
    });
  }
  v1::RoutingTable table;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(SetWeights(i % 2 ? std::map<std::string, double>{{"a", 1}, {"b", 0}}
                                 : std::map<std::string, double>{{"a", 1}, {"b", 3}},
                           &table)
                    .ok());
    if (i == 10) {
      v1::LoadVariantRequest load;
      load.set_model(kModel);
      load.set_variant("c");
      load.set_path("c.safetensors");
      load.set_weight(1);
      v1::VariantInfo info;
      ASSERT_TRUE(admin_->LoadVariant(AdminContext().get(), load, &info).ok());
    }
    if (i == 15) {
      v1::UnloadVariantRequest unload;
      unload.set_model(kModel);
      unload.set_variant("c");
      ASSERT_TRUE(admin_->UnloadVariant(AdminContext().get(), unload, &table).ok());
    }
    std::this_thread::sleep_for(
        std::chrono::milliseconds(50));  // let traffic flow between switches
  }
  stop = true;
  for (auto& c : clients) c.join();
  EXPECT_EQ(failed, 0);
  EXPECT_GT(ok, 100);
  EXPECT_TRUE(variants_seen.count("a") && variants_seen.count("b")) << "both variants served";
}

TEST_F(HotSwitchTest, BrokenArtifactIsRejectedAndOldRoutingKeepsServing) {
  StartServer(ConfigText({{"a", "a.safetensors", 1}}));
  v1::LoadVariantRequest load;
  load.set_model(kModel);
  load.set_variant("x");
  load.set_path("broken.safetensors");
  load.set_weight(1);
  v1::VariantInfo info;
  grpc::Status s = admin_->LoadVariant(AdminContext().get(), load, &info);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.error_message().find("broken.safetensors"), std::string::npos) << s.error_message();
  v1::RoutingTable table;
  v1::GetRoutingRequest get;
  get.set_model(kModel);
  ASSERT_TRUE(admin_->GetRouting(AdminContext().get(), get, &table).ok());
  EXPECT_EQ(table.generation(), 1);
  EXPECT_EQ(table.weights().size(), 1u);
  ClassifyResponse response;
  ASSERT_TRUE(ClassifyImage(1, &response).ok());
  EXPECT_EQ(response.variant(), "a");

  // A good artifact loads, gets its weight, and a duplicate name is refused unless replaced.
  load.set_variant("c");
  load.set_path("c.safetensors");
  ASSERT_TRUE(admin_->LoadVariant(AdminContext().get(), load, &info).ok());
  EXPECT_EQ(info.state(), v1::VARIANT_STATE_READY);
  EXPECT_DOUBLE_EQ(info.weight(), 0.5);
  EXPECT_EQ(admin_->LoadVariant(AdminContext().get(), load, &info).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  load.set_replace(true);
  EXPECT_TRUE(admin_->LoadVariant(AdminContext().get(), load, &info).ok());
  ASSERT_TRUE(ClassifyImage(2, &response, "c").ok());
  EXPECT_EQ(response.classes(0).index(), ExpectedTop1(kSeedC, 2));
}

TEST_F(HotSwitchTest, UnloadedVariantIsFreedAfterItsLastRequest) {
  StartServer(ConfigText({{"a", "a.safetensors", 1}, {"b", "b.safetensors", 1}}));
  std::weak_ptr<Variant> b = server_->repository().Find(kModel)->routing()->Find("b");
  ASSERT_FALSE(b.expired());
  v1::UnloadVariantRequest unload;
  unload.set_model(kModel);
  unload.set_variant("b");
  v1::RoutingTable table;
  ASSERT_TRUE(admin_->UnloadVariant(AdminContext().get(), unload, &table).ok());
  EXPECT_EQ(table.weights().count("b"), 0u);
  ClassifyResponse response;
  EXPECT_EQ(ClassifyImage(1, &response, "b").error_code(), grpc::StatusCode::NOT_FOUND);
  // Freed by the repository's reaper once nothing holds it (a guard, not a timing assertion).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!b.expired() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(b.expired());
  // The last variant with traffic cannot go.
  unload.set_variant("a");
  EXPECT_EQ(admin_->UnloadVariant(AdminContext().get(), unload, &table).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(HotSwitchTest, ReloadAppliesTheFileAndRejectsBadOnes) {
  StartServer(ConfigText({{"a", "a.safetensors", 1}, {"b", "b.safetensors", 0}}));
  std::shared_ptr<Variant> a_before = server_->repository().Find(kModel)->routing()->Find("a");

  // b gets all traffic, c is new; a is unchanged and stays the same loaded object.
  WriteFile(dir_ / "config.yaml",
            ConfigText(
                {{"a", "a.safetensors", 0}, {"b", "b.safetensors", 1}, {"c", "c.safetensors", 0}}));
  v1::ReloadConfigResponse reload;
  ASSERT_TRUE(admin_->ReloadConfig(AdminContext().get(), {}, &reload).ok());
  std::string changes;
  for (const auto& c : reload.changes()) absl::StrAppend(&changes, c, "\n");
  EXPECT_NE(changes.find("loaded variant c"), std::string::npos) << changes;
  EXPECT_EQ(changes.find("loaded variant a"), std::string::npos) << changes;
  auto routing = server_->repository().Find(kModel)->routing();
  EXPECT_EQ(routing->Find("a"), a_before);
  EXPECT_EQ(routing->generation(), 2);
  ClassifyResponse response;
  ASSERT_TRUE(ClassifyImage(1, &response).ok());
  EXPECT_EQ(response.variant(), "b");

  // Invalid YAML, a missing artifact, and a broken one: each rejected, routing unchanged.
  for (const std::string& bad :
       {std::string("models: [ {name: tiny"),
        ConfigText({{"a", "a.safetensors", 1}, {"d", "missing.safetensors", 1}}),
        ConfigText({{"a", "a.safetensors", 1}, {"x", "broken.safetensors", 1}})}) {
    WriteFile(dir_ / "config.yaml", bad);
    EXPECT_FALSE(admin_->ReloadConfig(AdminContext().get(), {}, &reload).ok()) << bad;
    EXPECT_EQ(server_->repository().Find(kModel)->routing(), routing);
    ASSERT_TRUE(ClassifyImage(2, &response).ok());
    EXPECT_EQ(response.variant(), "b");
  }
}

// Every request routed to b is copied to the reference a; with an idle reference nothing is
// dropped and the agreement counts equal what the two models compute.
TEST_F(HotSwitchTest, ShadowComparesEachAnswerWithTheReference) {
  StartServer(ConfigText({{"a", "a.safetensors", 0}, {"b", "b.safetensors", 1}},
                         "    shadow: {variant: a, fraction: 1.0}\n"));
  constexpr int kRequests = 24;
  int expected_agreements = 0;
  for (uint32_t i = 0; i < kRequests; ++i) {
    ClassifyResponse response;
    ASSERT_TRUE(ClassifyImage(i, &response).ok());
    ASSERT_EQ(response.variant(), "b");
    expected_agreements += ExpectedTop1(kSeedA, i) == ExpectedTop1(kSeedB, i);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  const v1::VariantStats* b = nullptr;
  v1::StatsResponse stats;
  do {
    stats = Stats();
    b = StatsOf(stats, "b");
    ASSERT_NE(b, nullptr);
  } while (b->shadow_compared() + b->shadow_dropped() < kRequests &&
           std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(stats.reference_variant(), "a");
  EXPECT_EQ(b->shadow_dropped(), 0);
  EXPECT_EQ(b->shadow_compared(), kRequests);
  EXPECT_EQ(b->shadow_agreed(), expected_agreements);
  EXPECT_GT(b->shadow_mean_cosine(), -1.0);
  EXPECT_LE(b->shadow_mean_cosine(), 1.0);
  EXPECT_EQ(b->requests(), kRequests);
  // The reference's own figures do not count the copies.
  EXPECT_EQ(StatsOf(stats, "a")->requests(), 0);
}

// A slow reference never holds answers back: under a burst every request is answered, and the
// copies the reference cannot take are dropped (counted) rather than queued. The served variant
// is the slow model too, so that its batches keep the engine thread busy for the whole burst:
// shadow batches run only when no real batch waits, and the copies pile up in the meantime.
TEST_F(HotSwitchTest, ShadowCopiesAreDroppedWhenTheReferenceIsBusy) {
  StartServer(ConfigText({{"slow", "slow.safetensors", 0}, {"b", "slow.safetensors", 1}},
                         "    shadow: {variant: slow, fraction: 1.0}\n"));
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::Classifier::NewStub(channel);
  AsyncClassify calls([&stub](grpc::ClientContext* c, const ClassifyRequest* req,
                              ClassifyResponse* resp, std::function<void(grpc::Status)> done) {
    stub->async()->Classify(c, req, resp, std::move(done));
  });
  constexpr int kBurst = 96;
  for (int i = 0; i < kBurst; ++i) {
    calls.Start(TensorClassifyRequest(RandomImages(1, i), {1, kImageSize, kImageSize}));
  }
  ASSERT_TRUE(calls.WaitAll());
  for (const auto& call : calls.calls())
    EXPECT_TRUE(call->status.ok()) << call->status.error_message();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  v1::StatsResponse stats;
  const v1::VariantStats* b = nullptr;
  do {
    stats = Stats();
    b = StatsOf(stats, "b");
  } while (b->shadow_compared() + b->shadow_dropped() < kBurst &&
           std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(b->shadow_compared() + b->shadow_dropped(), kBurst);
  EXPECT_GT(b->shadow_dropped(), 0);
  EXPECT_GT(b->shadow_compared(), 0);
}

TEST_F(HotSwitchTest, LabeledAccuracyFromRequestsAndFeedback) {
  StartServer(ConfigText({{"a", "a.safetensors", 1}}));
  ClassifyResponse response;
  const int64_t top1 = ExpectedTop1(kSeedA, 7);
  const int64_t wrong = (top1 + 1) % kClasses;
  ASSERT_TRUE(ClassifyImage(7, &response, "", absl::StrCat(top1)).ok());
  ASSERT_TRUE(ClassifyImage(7, &response, "", kLabels[wrong]).ok());  // by name
  EXPECT_EQ(ClassifyImage(7, &response, "", "42").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ClassifyImage(7, &response, "", "no-such-class").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Labeled later: the request id from the response.
  ASSERT_TRUE(ClassifyImage(7, &response).ok());
  v1::FeedbackRequest feedback;
  feedback.set_request_id(response.request_id());
  feedback.set_label("not a class");
  v1::FeedbackResponse outcome;
  auto call = [&] {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    return classifier_->Feedback(&context, feedback, &outcome);
  };
  EXPECT_EQ(call().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  feedback.set_label(absl::StrCat(top1));
  ASSERT_TRUE(call().ok());  // a typo above did not lose the request
  EXPECT_TRUE(outcome.correct());
  EXPECT_EQ(outcome.variant(), "a");
  EXPECT_EQ(call().error_code(), grpc::StatusCode::NOT_FOUND);  // labeled once
  feedback.set_request_id("never-seen");
  EXPECT_EQ(call().error_code(), grpc::StatusCode::NOT_FOUND);

  const v1::StatsResponse stats = Stats();
  const v1::VariantStats* a = StatsOf(stats, "a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->labeled(), 3);
  EXPECT_EQ(a->labeled_correct(), 2);
}

}  // namespace
}  // namespace vitq::server::testing
