#include "pmi/kvs.hpp"

namespace crkit::pmi {

Kvs::Kvs(KvsMap job_attributes) : global_(std::move(job_attributes)) {}

void Kvs::put(int rank, std::string key, std::string value) {
  pending_.insert_or_assign(key, value);
  own_[rank].insert_or_assign(std::move(key), std::move(value));
}

const std::string* Kvs::get(int rank, std::string_view key) const {
  if (auto o = own_.find(rank); o != own_.end()) {
    if (auto it = o->second.find(key); it != o->second.end()) return &it->second;
  }
  if (auto it = global_.find(key); it != global_.end()) return &it->second;
  return nullptr;
}

std::optional<std::pair<std::string, std::string>> Kvs::at_index(int rank, size_t idx) const {
  // A merge walk over the rank's own puts laid over the global map: linear per call, which is
  // fine because MPICH 4 no longer iterates the KVS (getbyidx is for older clients and tools).
  static const KvsMap kEmpty;
  auto o = own_.find(rank);
  const KvsMap& own = o == own_.end() ? kEmpty : o->second;
  auto a = own.begin();
  auto g = global_.begin();
  while (a != own.end() || g != global_.end()) {
    const std::pair<const std::string, std::string>* cur;
    if (g == global_.end() || (a != own.end() && a->first <= g->first)) {
      if (g != global_.end() && a->first == g->first) ++g;  // own value shadows the global one
      cur = &*a++;
    } else {
      cur = &*g++;
    }
    if (idx-- == 0) return std::make_pair(cur->first, cur->second);
  }
  return std::nullopt;
}

KeyValues Kvs::take_pending() {
  KeyValues batch(pending_.begin(), pending_.end());
  pending_.clear();
  return batch;
}

void Kvs::restore_pending(const KeyValues& batch) {
  for (const auto& [k, v] : batch) pending_.try_emplace(k, v);
}

void Kvs::apply_fence(const KeyValues& own_batch, const KvsMap& job_puts) {
  // Our own batch goes in first so a backend that echoes only the other nodes' puts still
  // leaves this node's keys visible; the job-wide result then decides any conflict.
  for (const auto& [k, v] : own_batch) global_.insert_or_assign(k, v);
  for (const auto& [k, v] : job_puts) global_.insert_or_assign(k, v);
  // Puts made while the fence was in flight stay pending for the next fence but remain
  // visible to their rank; everything older is now in global_.
  for (auto& [rank, own] : own_) {
    for (auto it = own.begin(); it != own.end();) {
      auto p = pending_.find(it->first);
      if (p == pending_.end() || p->second != it->second) {
        it = own.erase(it);
      } else {
        ++it;
      }
    }
  }
}

}  // namespace crkit::pmi
