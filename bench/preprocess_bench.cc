// Preprocessing cost per request: decode + resize + center crop + normalise to 224×224, on real
// photographs shipped by Debian's python3-skimage, single thread and two threads.
#include <benchmark/benchmark.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "preprocessing/image.h"

namespace {

const char kPhotoDir[] = "/usr/lib/python3/dist-packages/skimage/data/";

void BM_Preprocess(benchmark::State& state, const std::string& photo) {
  std::ifstream in(kPhotoDir + photo, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) {
    state.SkipWithError("photo not found (install python3-skimage)");
    return;
  }
  vitq::preprocessing::PreprocessOptions options;
  options.num_threads = state.range(0);
  std::vector<float> out;
  for (auto _ : state) {
    absl::Status s = vitq::preprocessing::PreprocessImage(bytes, options, out);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK_CAPTURE(BM_Preprocess, astronaut_png_512, "astronaut.png")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Preprocess, retina_jpg_1411, "retina.jpg")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Preprocess, hubble_jpg_872x1000, "hubble_deep_field.jpg")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
