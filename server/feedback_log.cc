#include "server/feedback_log.h"

namespace vitq::server {

void FeedbackLog::Remember(const std::string& request_id, AnsweredRequest answer, int64_t now_us) {
  absl::MutexLock lock(&mu_);
  entries_[request_id] = Entry{std::move(answer), now_us};
  order_.emplace_back(request_id, now_us);
  EvictLocked(now_us);
}

std::optional<AnsweredRequest> FeedbackLog::Take(const std::string& request_id, int64_t now_us) {
  absl::MutexLock lock(&mu_);
  EvictLocked(now_us);
  auto it = entries_.find(request_id);
  if (it == entries_.end()) return std::nullopt;
  AnsweredRequest answer = std::move(it->second.answer);
  entries_.erase(it);
  return answer;
}

size_t FeedbackLog::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

void FeedbackLog::EvictLocked(int64_t now_us) {
  while (!order_.empty() &&
         (order_.size() > capacity_ || now_us - order_.front().second > max_age_us_)) {
    const auto& [id, stored_us] = order_.front();
    auto it = entries_.find(id);
    // Only the pair that stored the current entry removes it.
    if (it != entries_.end() && it->second.stored_us == stored_us) entries_.erase(it);
    order_.pop_front();
  }
}

}  // namespace vitq::server
