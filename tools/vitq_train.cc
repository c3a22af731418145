// vitq-train: trains DeiT / Swin classifiers (and a CNN distillation teacher) with LibTorch and
// exports them as vitq checkpoints. Run `vitq-train --help`.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "backends/model_config.h"
#include "backends/safetensors.h"
#include "preprocessing/dataset.h"
#include "training/export.h"
#include "training/nets.h"
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

void AddCommon(CLI::App* app, CommonFlags& f) {
  TrainOptions& o = f.options;
  app->add_option("--card", f.card,
                  "model card (YAML): architecture and preprocessing (docs/FORMAT.md)")
      ->required()
      ->check(CLI::ExistingFile);
  app->add_option("--output,-o", f.out_dir,
                  "output folder: checkpoint.pt, train.log, exported model")
      ->required();
  app->add_option("--train-data", f.train_data,
                  "training data spec (fashion-mnist:train[:N], idx:IMAGES,LABELS)");
  app->add_option("--test-data", f.test_data, "evaluation data spec, evaluated after every epoch");
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
  app->add_option("--threads", o.threads, "LibTorch threads")->check(CLI::Range(1, 256));
  app->add_flag("--resume", o.resume, "continue from OUTPUT/checkpoint.pt if it exists");
  app->add_option(
      "--max-epochs-this-run", o.max_epochs_this_run,
      "stop after this many epochs (time-boxed sessions); continue later with --resume");
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

}  // namespace
}  // namespace vitq::training

int main(int argc, char** argv) {
  using namespace vitq::training;
  // LibTorch's OpenMP pool and OpenBLAS' threads fight over the cores when OpenMP threads spin
  // (measured: 1.4x slower training). libgomp reads OMP_WAIT_POLICY when it loads, so set it
  // and re-execute once.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    ::execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
  }
  CLI::App app{
      "vitq-train: trains DeiT and Swin classifiers with LibTorch and exports vitq checkpoints.\n"
      "Checkpoints every epoch; --resume continues an interrupted run."};
  app.require_subcommand(1);
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
  CLI11_PARSE(app, argc, argv);
  if (*predict) return RunPredict(predict_model, predict_data, predict_out);
  if (*fit) return RunFit(fit_flags, name, teacher_path, CommandLine(argc, argv));
  return RunTeacher(teacher_flags);
}
