#include "server/output.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace vitq::server {

std::vector<float> Softmax(const std::vector<float>& logits, int64_t classes) {
  std::vector<float> out(logits.size());
  if (classes <= 0) return out;
  for (size_t row = 0; row + classes <= logits.size(); row += classes) {
    const float* x = logits.data() + row;
    const float max = *std::max_element(x, x + classes);
    std::vector<double> e(classes);
    double sum = 0;
    for (int64_t c = 0; c < classes; ++c) sum += e[c] = std::exp(static_cast<double>(x[c] - max));
    for (int64_t c = 0; c < classes; ++c) out[row + c] = static_cast<float>(e[c] / sum);
  }
  return out;
}

std::vector<TopClass> TopK(const float* probabilities, int64_t classes, int64_t k) {
  k = std::clamp<int64_t>(k, 0, classes);
  std::vector<int64_t> order(classes);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    return probabilities[a] > probabilities[b] || (probabilities[a] == probabilities[b] && a < b);
  });
  std::vector<TopClass> top;
  for (int64_t i = 0; i < k; ++i) top.push_back({order[i], probabilities[order[i]]});
  return top;
}

int64_t ArgMax(const float* logits, int64_t classes) {
  return std::max_element(logits, logits + classes) - logits;
}

double LogitCosine(const float* a, const float* b, int64_t classes) {
  double dot = 0, aa = 0, bb = 0;
  for (int64_t c = 0; c < classes; ++c) {
    dot += static_cast<double>(a[c]) * b[c];
    aa += static_cast<double>(a[c]) * a[c];
    bb += static_cast<double>(b[c]) * b[c];
  }
  if (aa == 0 && bb == 0) return 1.0;
  if (aa == 0 || bb == 0) return 0.0;
  return dot / std::sqrt(aa * bb);
}

namespace {

// log softmax of one row, in double.
std::vector<double> LogSoftmax(const float* logits, int64_t classes) {
  const double max = *std::max_element(logits, logits + classes);
  double sum = 0;
  for (int64_t c = 0; c < classes; ++c) sum += std::exp(logits[c] - max);
  const double log_sum = std::log(sum) + max;
  std::vector<double> out(classes);
  for (int64_t c = 0; c < classes; ++c) out[c] = logits[c] - log_sum;
  return out;
}

}  // namespace

double SoftmaxKlDivergence(const float* p_logits, const float* q_logits, int64_t classes) {
  const std::vector<double> log_p = LogSoftmax(p_logits, classes);
  const std::vector<double> log_q = LogSoftmax(q_logits, classes);
  double kl = 0;
  for (int64_t c = 0; c < classes; ++c) kl += std::exp(log_p[c]) * (log_p[c] - log_q[c]);
  return std::max(kl, 0.0);
}

std::string ClassName(const Variant& variant, int64_t index) {
  const auto& names = variant.class_names();
  if (index >= 0 && index < static_cast<int64_t>(names.size())) return names[index];
  return std::to_string(index);
}

}  // namespace vitq::server
