#include "pmi/fence.hpp"

#include <utility>

namespace crkit::pmi {

void LocalFenceBackend::fence(KeyValues puts_since_last_fence, Done done) {
  KvsMap all;
  for (auto& [k, v] : puts_since_last_fence) all.insert_or_assign(std::move(k), std::move(v));
  done(std::move(all));
}

}  // namespace crkit::pmi
