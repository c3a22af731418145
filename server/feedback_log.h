// The answers of recent requests, kept so that a client can send a request's true label later
// (Classifier.Feedback) and have it counted for the variant that answered. Bounded in size and
// age: the oldest entries go first. Thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace vitq::server {

class Variant;

struct AnsweredRequest {
  std::string model;
  std::string variant_name;
  std::weak_ptr<Variant> variant;  // counts the label only while it is still loaded
  std::vector<int64_t> top1;       // per image
  int64_t num_classes = 0;
};

class FeedbackLog {
 public:
  FeedbackLog(size_t capacity = 100000, int64_t max_age_us = int64_t{3600} * 1000000)
      : capacity_(capacity), max_age_us_(max_age_us) {}

  // Remembers the answer to `request_id` (replacing an older one with the same id).
  void Remember(const std::string& request_id, AnsweredRequest answer, int64_t now_us);
  // The answer to `request_id`, removed so that it is labeled once; nullopt when unknown,
  // expired or already labeled.
  std::optional<AnsweredRequest> Take(const std::string& request_id, int64_t now_us);
  size_t size() const;

 private:
  struct Entry {
    AnsweredRequest answer;
    int64_t stored_us = 0;
  };
  void EvictLocked(int64_t now_us) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t capacity_;
  const int64_t max_age_us_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  // Insertion order: (id, time stored); an id re-stored later leaves a stale pair behind.
  std::deque<std::pair<std::string, int64_t>> order_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vitq::server
