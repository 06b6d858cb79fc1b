// Checkpoint orchestration: resolve the request to processes, freeze all of them, collect
// every resource, write one image.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "image/image_file.hpp"
#include "inject/freezer.hpp"
#include "resources/memory.hpp"
#include "resources/process_tree.hpp"

namespace crkit::engine {

using resources::Scope;

struct CheckpointStats {
  uint64_t processes = 0;
  uint64_t threads = 0;
  uint64_t vmas = 0;
  uint64_t pages_written = 0;
  uint64_t zero_pages_skipped = 0;
  uint64_t fds = 0;
  uint64_t image_bytes = 0;
  double frozen_seconds = 0;  // filled by the caller once it releases the target
};

struct Checkpoint {
  inject::FrozenTree frozen;  // still frozen: the caller applies the after-dump policy
  CheckpointStats stats;
  std::vector<pid_t> zombies;  // skipped (exited, not yet reaped)
};

// Checks a request before anything is created or frozen: the processes exist and the caller
// may checkpoint them (ESRCH, EPERM as checkpoint() would fail).
Status check_request(Scope scope, pid_t id);

// Freezes every process of the request (scope + id), then writes their image to w. All are
// frozen before any is dumped. On error every process has been released untouched.
// Fails with ESRCH (nothing to checkpoint), EPERM (a process the caller may not trace),
// CR_EPTRACED (traced by someone else) and the errno of any failing step.
Result<Checkpoint> checkpoint(Scope scope, pid_t id, image::ImageWriter& w,
                              const resources::ProgressFn& progress);

}  // namespace crkit::engine
