// Checkpoint orchestration: freeze, collect every resource, write the image.
#pragma once

#include <sys/types.h>

#include <optional>

#include "common/result.hpp"
#include "image/image_file.hpp"
#include "inject/freezer.hpp"
#include "resources/memory.hpp"

namespace crkit::engine {

// BLCR's CR_SCOPE_* values.
enum class Scope : uint32_t { Proc = 1, Pgrp = 2, Sess = 3, Tree = 4 };

struct CheckpointStats {
  uint64_t threads = 0;
  uint64_t vmas = 0;
  uint64_t pages_written = 0;
  uint64_t zero_pages_skipped = 0;
  uint64_t fds = 0;
  uint64_t image_bytes = 0;
  double frozen_seconds = 0;  // filled by the caller once it releases the target
};

struct Checkpoint {
  inject::FrozenProcess frozen;  // still frozen: the caller applies the after-dump policy
  CheckpointStats stats;
};

// Resolves a BLCR scope + id to the process to checkpoint. Multi-process scopes are not
// supported yet and fail with a message naming the other processes.
Result<pid_t> resolve_scope(Scope scope, pid_t id);

// Freezes pid and writes its image to w. On error the target has been released untouched.
Result<Checkpoint> checkpoint_process(pid_t pid, Scope scope, image::ImageWriter& w,
                                      const resources::ProgressFn& progress);

}  // namespace crkit::engine
