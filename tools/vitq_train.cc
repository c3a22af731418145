// vitq-train: trains DeiT / Swin classifiers (and a CNN distillation teacher) with LibTorch and
// exports them as vitq checkpoints. Run `vitq-train --help`.
#include <dlfcn.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "backends/model_config.h"
#include "backends/safetensors.h"
#include "preprocessing/dataset.h"
#include "training/export.h"
#include "training/nets.h"
#include "training/qat.h"
#include "training/trainer.h"

namespace vitq::training {
namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "vitq-train: error: %s\n", std::string(s.message()).c_str());
  return 1;
}

struct CommonFlags {
  std::string card;
  std::string out_dir;
  std::string train_data = "fashion-mnist:train";
  std::string test_data = "fashion-mnist:test";
  TrainOptions options;
};

void AddData(CLI::App* app, CommonFlags& f) {
  app->add_option("--train-data", f.train_data,
                  "training data spec (fashion-mnist:train[:N], idx:IMAGES,LABELS)");
  app->add_option("--test-data", f.test_data, "evaluation data spec, evaluated after every epoch");
}

// Schedule, augmentation and resume options shared by fit, teacher and qat.
void AddSchedule(CLI::App* app, TrainOptions& o) {
  app->add_option("--epochs", o.epochs, "epochs")->check(CLI::Range(1, 10000));
  app->add_option("--batch", o.batch_size, "batch size")->check(CLI::Range(1, 65536));
  app->add_option("--lr", o.lr, "peak learning rate (AdamW)");
  app->add_option("--min-lr", o.min_lr, "learning rate at the end of the cosine decay");
  app->add_option("--warmup", o.warmup_epochs, "linear warmup, in epochs");
  app->add_option("--weight-decay", o.weight_decay,
                  "AdamW weight decay (not on biases, norms, tokens)");
  app->add_option("--label-smoothing", o.label_smoothing, "label smoothing of the class loss");
  app->add_option("--clip-grad", o.clip_grad_norm, "gradient norm clip (0: off)");
  app->add_option("--crop-padding", o.crop_padding,
                  "random crop of the image zero-padded by this many pixels");
  app->add_flag("!--no-flip", o.hflip, "disable random horizontal flips");
  app->add_option("--erase", o.erase_prob, "random erasing probability")
      ->check(CLI::Range(0.0, 1.0));
  app->add_option("--seed", o.seed, "seed of data order, augmentation and initialisation");
  app->add_option("--threads", o.threads, "LibTorch threads (not all cores by default)")
      ->check(CLI::Range(1, 256));
  app->add_flag("--resume", o.resume,
                "continue from the run's checkpoint.pt (OUTPUT/, qat: --work-dir) if it exists");
  app->add_option("--max-epochs-this-run", o.max_epochs_this_run,
                  "stop after this many epochs (time-boxed sessions; 0: run to --epochs); continue "
                  "later with --resume");
  app->add_option("--max-steps", o.max_steps_per_epoch,
                  "end every epoch after this many steps (smoke runs; 0: whole epochs)");
}

void AddCommon(CLI::App* app, CommonFlags& f) {
  app->add_option("--card", f.card,
                  "model card (YAML): architecture and preprocessing (docs/FORMAT.md)")
      ->required()
      ->check(CLI::ExistingFile);
  app->add_option("--output,-o", f.out_dir,
                  "output folder: checkpoint.pt, train.log, and the exported model (fit) or "
                  "teacher.pt (teacher)")
      ->required();
  AddData(app, f);
  AddSchedule(app, f.options);
}

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Loaded {
  ModelConfig config;
  std::string card_text;
  data::LabeledImages train, test;
};

absl::StatusOr<Loaded> LoadInputs(const CommonFlags& f) {
  Loaded l;
  auto text = ReadText(f.card);
  if (!text.ok()) return text.status();
  l.card_text = *text;
  auto config = LoadModelCard(f.card);
  if (!config.ok()) return config.status();
  l.config = *config;
  if (l.config.in_chans != 1)
    return absl::InvalidArgumentError("vitq-train reads grayscale datasets: in_chans must be 1");
  auto train = data::LoadDataset(f.train_data);
  if (!train.ok()) return train.status();
  auto test = data::LoadDataset(f.test_data);
  if (!test.ok()) return test.status();
  if (train->height != l.config.img_size || train->width != l.config.img_size) {
    return absl::InvalidArgumentError(absl::StrCat("dataset images are ", train->height, "x",
                                                   train->width, ", the card says img_size ",
                                                   l.config.img_size));
  }
  if (train->num_classes > l.config.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat("dataset has ", train->num_classes,
                                                   " classes, the card ", l.config.num_classes));
  }
  l.train = std::move(*train);
  l.test = std::move(*test);
  return l;
}

std::string CommandLine(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  args[0] = "vitq-train";
  return absl::StrJoin(args, " ");
}

// The CNN teacher as a Classifier, so the trainer can train it too.
class TeacherClassifier : public Classifier {
 public:
  TeacherClassifier(int64_t in_chans, int64_t classes)
      : cnn(register_module("cnn", TeacherCnn(in_chans, classes))) {}
  Logits Forward(const torch::Tensor& images) override { return Logits{cnn(images), {}}; }
  TeacherCnn cnn;
};

int RunFit(const CommonFlags& f, const std::string& name_flag, const std::string& teacher_path,
           const std::string& command) {
  auto in = LoadInputs(f);
  if (!in.ok()) return Fail(in.status());
  const ModelConfig& c = in->config;
  const std::string name = name_flag.empty() ? c.name : name_flag;
  std::shared_ptr<Classifier> model;
  torch::manual_seed(f.options.seed);  // reproducible initial weights
  try {
    model = MakeClassifier(c);
  } catch (const std::exception& e) {
    return Fail(absl::InvalidArgumentError(e.what()));
  }
  std::function<torch::Tensor(const torch::Tensor&)> teacher_fn;
  std::shared_ptr<TeacherClassifier> teacher;
  if (!teacher_path.empty()) {
    if (!c.distilled)
      return Fail(absl::InvalidArgumentError("--teacher needs a card with distilled: true"));
    teacher = std::make_shared<TeacherClassifier>(c.in_chans, c.num_classes);
    if (absl::Status s = LoadModule(*teacher, teacher_path); !s.ok()) return Fail(s);
    teacher->eval();
    std::fprintf(stderr, "teacher %s: test top1 %.4f\n", teacher_path.c_str(),
                 Evaluate(*teacher, in->test, c.preprocess.mean[0], c.preprocess.std[0]));
    teacher_fn = [teacher](const torch::Tensor& x) { return teacher->Forward(x).logits; };
  }
  TrainOptions o = f.options;
  o.out_dir = f.out_dir;
  o.log_prefix = name;
  auto result =
      Train(*model, in->train, in->test, c.preprocess.mean[0], c.preprocess.std[0], o, teacher_fn);
  if (!result.ok()) return Fail(result.status());
  if (result->epochs_done < o.epochs) {
    std::printf("stopped after epoch %d of %d; continue with --resume\n", result->epochs_done,
                o.epochs);
    return 0;
  }
  std::map<std::string, std::string> provenance = {
      {"command", command},
      {"seed", std::to_string(o.seed)},
      {"epochs", std::to_string(result->epochs_done)},
      {"wall_time_min", absl::StrFormat("%.1f", result->wall_time_s / 60)},
      {"test_top1", absl::StrFormat("%.4f", result->test_top1)},
      {"train_data", f.train_data},
      {"test_data", f.test_data},
      {"teacher", teacher_path.empty() ? "none" : teacher_path},
  };
  const std::string stem = f.out_dir + "/" + name;
  if (absl::Status s =
          ExportCheckpoint(*model, in->card_text, name, c.labels_path, provenance, stem);
      !s.ok())
    return Fail(s);
  std::printf("test_top1=%.4f epochs=%d wall_time_min=%.1f\nexported %s.safetensors and %s.yaml\n",
              result->test_top1, result->epochs_done, result->wall_time_s / 60, stem.c_str(),
              stem.c_str());
  return 0;
}

int RunTeacher(const CommonFlags& f) {
  auto in = LoadInputs(f);
  if (!in.ok()) return Fail(in.status());
  const ModelConfig& c = in->config;
  TeacherClassifier teacher(c.in_chans, c.num_classes);
  TrainOptions o = f.options;
  o.out_dir = f.out_dir;
  o.log_prefix = "teacher";
  auto result = Train(teacher, in->train, in->test, c.preprocess.mean[0], c.preprocess.std[0], o);
  if (!result.ok()) return Fail(result.status());
  const std::string path = f.out_dir + "/teacher.pt";
  if (absl::Status s = SaveModule(teacher, path); !s.ok()) return Fail(s);
  std::printf("test_top1=%.4f epochs=%d wall_time_min=%.1f\nsaved %s\n", result->test_top1,
              result->epochs_done, result->wall_time_s / 60, path.c_str());
  return 0;
}

// LibTorch logits of an exported checkpoint on a dataset: the reference the engine is checked
// against.
int RunPredict(const std::string& model_path, const std::string& data_spec,
               const std::string& out_path) {
  auto config = LoadModelCard(CardPathFor(model_path));
  if (!config.ok()) return Fail(config.status());
  std::shared_ptr<Classifier> model;
  try {
    model = MakeClassifier(*config);
  } catch (const std::exception& e) {
    return Fail(absl::InvalidArgumentError(e.what()));
  }
  if (absl::Status s = LoadCheckpoint(*model, model_path); !s.ok()) return Fail(s);
  auto data = data::LoadDataset(data_spec);
  if (!data.ok()) return Fail(data.status());
  torch::NoGradGuard no_grad;
  model->eval();
  std::vector<int64_t> idx(data->count);
  std::iota(idx.begin(), idx.end(), 0);
  auto logits =
      model->Forward(MakeBatch(*data, idx, config->preprocess.mean[0], config->preprocess.std[0]))
          .Inference()
          .contiguous();
  SafetensorsWriter writer;
  writer.Add(
      "logits", DType::kF32, {data->count, config->num_classes},
      std::span<const uint8_t>(static_cast<const uint8_t*>(logits.data_ptr()), logits.numel() * 4));
  writer.Add("labels", DType::kU8, {data->count}, data->labels);
  if (absl::Status s = writer.WriteFile(out_path); !s.ok()) return Fail(s);
  std::printf("wrote %lld logits to %s\n", static_cast<long long>(data->count), out_path.c_str());
  return 0;
}

const char* IrmName(Irm irm) {
  switch (irm) {
    case Irm::kNone:
      return "none";
    case Irm::kAffine:
      return "affine";
    case Irm::kLayerNorm:
      return "layernorm";
  }
  return "?";
}

// What the QAT run is called in the artifact: Q-ViT with all parts, else LSQ plus the parts.
std::string QatMethodName(const QatOptions& o) {
  const bool irm = o.irm != Irm::kNone;
  if (irm && o.dgd && o.distill) return "qvit";
  std::string name = "lsq";
  if (irm) name += "+irm";
  if (o.dgd) name += "+dgd";
  if (o.distill) name += "+distill";
  return name;
}

struct QatFlags {
  std::string model, output, work_dir;
  CommonFlags data;
  QatOptions options;
  int64_t verify_images = 10000;
};

std::string QatProvenance(const QatFlags& f, int64_t train_images, const TrainResult& r,
                          const Agreement* agreement, const std::string& command) {
  const QatOptions& o = f.options;
  const TrainOptions& t = o.train;
  nlohmann::ordered_json j = {
      {"method", QatMethodName(o)},
      {"settings",
       {{"weight_bits", o.bits.weight_bits},
        {"act_bits", o.bits.act_bits},
        {"edge_bits", o.edge.weight_bits},
        {"irm", IrmName(o.irm)},
        {"dgd", o.dgd},
        {"distill", o.distill},
        {"dgd_weight", o.dgd_weight},
        {"dgd_reduction", o.dgd_reduction == DgdReduction::kMean ? "mean" : "sum"},
        {"epochs", r.epochs_done},
        {"batch", t.batch_size},
        {"lr", t.lr},
        {"optimizer", "adamw"},
        {"command", command}}},
      {"calibration", {{"data", f.data.train_data}, {"count", train_images}, {"seed", t.seed}}},
      {"source", f.model},
      {"tool", "vitq-train qat 0.1"},
      {"accuracy",
       {{"data", f.data.test_data},
        {"fake_quant_top1", r.test_top1},
        {"wall_time_min", r.wall_time_s / 60}}}};
  if (agreement) {
    j["accuracy"]["served_top1"] = agreement->engine_top1;
    j["accuracy"]["served_vs_fake_quant_top1_agreement"] = agreement->top1_agreement;
    j["accuracy"]["verified_images"] = agreement->images;
  }
  return j.dump();
}

int RunQat(QatFlags& f, const std::string& command) {
  QatOptions& o = f.options;
  auto models = MakeQatModels(f.model, o);
  if (!models.ok()) return Fail(models.status());
  const ModelConfig& c = models->config;
  auto train = data::LoadDataset(f.data.train_data);
  if (!train.ok()) return Fail(train.status());
  auto test = data::LoadDataset(f.data.test_data);
  if (!test.ok()) return Fail(test.status());
  if (train->height != c.img_size || train->width != c.img_size || c.in_chans != 1) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "dataset images are ", train->height, "x", train->width, " grayscale, the model takes ",
        c.img_size, "x", c.img_size, " with ", c.in_chans, " channel(s)")));
  }
  if (f.work_dir.empty()) {
    const std::string stem = absl::EndsWith(f.output, ".safetensors")
                                 ? f.output.substr(0, f.output.size() - 12)
                                 : f.output;
    f.work_dir = stem + ".qat";
  }
  o.train.out_dir = f.work_dir;
  o.train.log_prefix =
      absl::StrCat(c.name, " ", QatMethodName(o), " W", o.bits.weight_bits, "A", o.bits.act_bits);
  std::fprintf(stderr, "%s: teacher (float) test top1 %.4f\n", c.name.c_str(),
               Evaluate(*models->teacher, *test, c.preprocess.mean[0], c.preprocess.std[0]));
  auto result = TrainQat(*models, *train, *test, o);
  if (!result.ok()) return Fail(result.status());
  if (result->epochs_done < o.train.epochs) {
    std::printf("stopped after epoch %d of %d; continue with --resume\n", result->epochs_done,
                o.train.epochs);
    return 0;
  }
  Classifier& student = *models->student;
  if (absl::Status s = ExportQatArtifact(
          student, c, QatProvenance(f, train->count, *result, nullptr, command), f.output);
      !s.ok())
    return Fail(s);
  auto agreement = CompareWithEngine(student, c, f.output, *test, f.verify_images);
  if (!agreement.ok()) return Fail(agreement.status());
  // Rewritten with what the engine measured on the exported file.
  if (absl::Status s = ExportQatArtifact(
          student, c, QatProvenance(f, train->count, *result, &*agreement, command), f.output);
      !s.ok())
    return Fail(s);
  std::printf(
      "fake_quant_top1=%.4f served_top1=%.4f top1_agreement=%.4f (%lld images, min logit "
      "cosine %.5f) epochs=%d wall_time_min=%.1f\nexported %s\n",
      result->test_top1, agreement->engine_top1, agreement->top1_agreement,
      static_cast<long long>(agreement->images), agreement->min_cosine, result->epochs_done,
      result->wall_time_s / 60, f.output.c_str());
  if (agreement->top1_agreement < 0.995) {
    std::fprintf(stderr,
                 "vitq-train: warning: the served artifact agrees with the trained model on only "
                 "%.2f%% of the images (expected >= 99.5%%)\n",
                 100 * agreement->top1_agreement);
  }
  return 0;
}

void AddQat(CLI::App* app, QatFlags& f) {
  app->option_defaults()->always_capture_default();  // --help shows the QAT schedule's defaults
  QatOptions& o = f.options;
  TrainOptions& t = o.train;
  // QAT fine-tunes a trained model: a short, gentle schedule (docs/RESULTS.md, Q-ViT).
  t.epochs = 3;
  t.batch_size = 64;
  t.lr = 2e-4;
  t.min_lr = 1e-6;
  t.warmup_epochs = 0.1;
  t.weight_decay = 0.0;
  t.label_smoothing = 0.0;
  app->add_option("--model,-m", f.model,
                  "float checkpoint (.safetensors with its .yaml card beside it): the start "
                  "point and the teacher")
      ->required()
      ->check(CLI::ExistingFile);
  app->add_option("--output,-o", f.output, "quantized artifact to write (.safetensors)")
      ->required();
  app->add_option("--work-dir", f.work_dir,
                  "checkpoint.pt and train.log (default: OUTPUT without .safetensors + .qat)");
  app->add_option("--wbits", o.bits.weight_bits, "weight bits of the blocks' Linears (2-8)")
      ->check(CLI::Range(2, 8));
  app->add_option("--abits", o.bits.act_bits,
                  "activation bits: Linear inputs, q, k, v and the softmax output")
      ->check(CLI::Range(2, 8));
  app->add_option("--edge-bits", o.edge.weight_bits,
                  "weight and activation bits of the patch embedding and the heads")
      ->check(CLI::Range(2, 8))
      ->each([&o](const std::string&) { o.edge.act_bits = o.edge.weight_bits; });
  CLI::Option* irm =
      app->add_option_function<std::string>(
             "--irm",
             [&o](const std::string& form) {
               o.irm = form == "layernorm" ? Irm::kLayerNorm : Irm::kAffine;
             },
             "form of the Information Rectification Module on q and k: affine (default; per "
             "channel, starts as the identity, folded into the qkv projection at export) or "
             "layernorm (per token, as Q-ViT's released code; served by the engine's "
             "rectification step)")
          ->check(CLI::IsMember({"affine", "layernorm"}));
  app->add_flag_callback(
         "--no-irm", [&o] { o.irm = Irm::kNone; }, "no Information Rectification Module")
      ->excludes(irm);
  app->add_flag("!--no-dgd", o.dgd, "no Distribution-Guided Distillation loss");
  app->add_flag("!--no-distill", o.distill, "class loss on the labels only (no teacher labels)");
  app->add_option("--dgd-weight", o.dgd_weight, "weight of the DGD loss")
      ->check(CLI::NonNegativeNumber);
  app->add_option_function<std::string>(
         "--dgd-reduction",
         [&o](const std::string& r) {
           o.dgd_reduction = r == "sum" ? DgdReduction::kSum : DgdReduction::kMean;
         },
         "DGD over layers and heads: mean (default; the loss stays the size of the class loss) "
         "or sum (the paper's formula: 2 x layers x heads times larger)")
      ->check(CLI::IsMember({"mean", "sum"}));
  app->add_option("--verify-images", f.verify_images,
                  "test images on which the served artifact is compared with the trained model")
      ->check(CLI::NonNegativeNumber);
  AddData(app, f.data);
  AddSchedule(app, t);
}

}  // namespace
}  // namespace vitq::training

namespace {

// OpenBLAS' own threading: 0 sequential, 1 pthreads, 2 OpenMP (openblas_get_parallel()); -1
// when the BLAS LibTorch loaded is not OpenBLAS. Looked up at run time because Debian's
// alternatives decide which libblas.so.3 that is.
int OpenBlasThreading() {
  using GetParallel = int (*)();
  auto fn = reinterpret_cast<GetParallel>(::dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  return fn ? fn() : -1;
}

// With the pthreads build, OpenBLAS keeps a thread pool of its own beside LibTorch's OpenMP
// pool: its idle threads yield-spin between GEMMs and take the cores from OpenMP's (QAT steps
// 10–40% slower than with the OpenMP build, which shares LibTorch's pool: docs/RESULTS.md).
// Tells how to fix it and, as the best this process can do, makes OpenMP's threads sleep when
// idle. libgomp reads OMP_WAIT_POLICY when it loads, hence the re-execution.
void MitigatePthreadsBlas(char** argv) {
  if (OpenBlasThreading() != 1) return;
  if (std::getenv("VITQ_TRAIN_REEXECUTED") == nullptr) {  // once, not again after the re-exec
    std::fprintf(stderr,
                 "vitq-train: warning: LibTorch runs on the pthreads build of OpenBLAS, whose "
                 "threads compete with LibTorch's; training is faster with the OpenMP build: "
                 "scripts/bootstrap installs libopenblas0-openmp and selects it.\n");
  }
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;  // the user's choice stands
  ::setenv("VITQ_TRAIN_REEXECUTED", "1", 1);
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

}  // namespace

int main(int argc, char** argv) {
  using namespace vitq::training;
  MitigatePthreadsBlas(argv);
  CLI::App app{
      "vitq-train: trains DeiT and Swin classifiers with LibTorch and exports vitq checkpoints.\n"
      "Checkpoints every epoch; --resume continues an interrupted run."};
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();  // every subcommand's --help shows defaults
  CommonFlags fit_flags, teacher_flags;
  std::string name, teacher_path;
  CLI::App* fit = app.add_subcommand(
      "fit", "Train the model of a card; exports OUTPUT/NAME.safetensors + .yaml");
  AddCommon(fit, fit_flags);
  fit->add_option("--name", name, "exported model name (default: the card's name)");
  fit->add_option("--teacher", teacher_path,
                  "CNN teacher (from `vitq-train teacher`) for DeiT hard distillation");
  CLI::App* teacher =
      app.add_subcommand("teacher", "Train the CNN distillation teacher; saves OUTPUT/teacher.pt");
  AddCommon(teacher, teacher_flags);
  std::string predict_model, predict_data = "fashion-mnist:test:256", predict_out;
  CLI::App* predict = app.add_subcommand(
      "predict", "LibTorch logits of an exported model on a dataset (parity reference)");
  predict
      ->add_option("--model,-m", predict_model, "exported .safetensors (its .yaml card beside it)")
      ->required();
  predict->add_option("--data", predict_data, "data spec");
  predict
      ->add_option("--output,-o", predict_out,
                   "safetensors with tensors logits [N, classes] and labels [N]")
      ->required();
  QatFlags qat_flags;
  CLI::App* qat = app.add_subcommand(
      "qat",
      "Q-ViT quantization-aware training of a float checkpoint (LSQ/LSQ+ quantizers, IRM, DGD); "
      "exports a quantized artifact and checks it on the integer engine");
  AddQat(qat, qat_flags);
  CLI11_PARSE(app, argc, argv);
  if (*qat) return RunQat(qat_flags, CommandLine(argc, argv));
  if (*predict) return RunPredict(predict_model, predict_data, predict_out);
  if (*fit) return RunFit(fit_flags, name, teacher_path, CommandLine(argc, argv));
  return RunTeacher(teacher_flags);
}
