// Turning logits into what clients read: probabilities, top-k classes and their names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "server/variant.h"

namespace vitq::server {

// Classes returned when a request does not say how many.
inline constexpr int64_t kDefaultTopK = 5;

// Row-wise softmax of (rows, classes) logits, computed in double for stable sums.
std::vector<float> Softmax(const std::vector<float>& logits, int64_t classes);

struct TopClass {
  int64_t index = 0;
  float probability = 0;
};

// The `k` most probable classes of one row, most probable first; ties keep the lower index first.
std::vector<TopClass> TopK(const float* probabilities, int64_t classes, int64_t k);

// The index of the largest of `classes` logits (the top-1 class); the lower index on ties.
int64_t ArgMax(const float* logits, int64_t classes);

// Cosine similarity of two logit vectors, in [-1, 1]; 1 when both are zero.
double LogitCosine(const float* a, const float* b, int64_t classes);

// KL(softmax(p_logits) || softmax(q_logits)) in nats: what is lost describing the reference's
// class distribution p by a variant's q.
double SoftmaxKlDivergence(const float* p_logits, const float* q_logits, int64_t classes);

// The label of class `index`, or its number as text when the model has no labels.
std::string ClassName(const Variant& variant, int64_t index);

}  // namespace vitq::server
