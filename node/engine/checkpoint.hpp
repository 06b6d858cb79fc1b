// Checkpoint orchestration: resolve the request to processes, freeze all of them, collect
// every resource, write one image.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "image/image_file.hpp"
#include "inject/freezer.hpp"
#include "resources/libcr_peer.hpp"
#include "resources/memory.hpp"
#include "resources/page_pipeline.hpp"
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
  uint64_t memory_bytes = 0;  // bytes of page data saved (zero pages left out)
  uint64_t stored_bytes = 0;  // their size in the image (after compression)
  unsigned workers = 0;       // threads of the page pipeline
  std::chrono::steady_clock::time_point freeze_start;  // when the first process was frozen
  // With a copy-on-write snapshot (cow) the engine released the processes itself, after
  // frozen_seconds; then each was frozen once more, for at most reap_frozen_seconds, to reap
  // its snapshot. Otherwise they are still frozen and frozen_seconds is 0.
  bool cow = false;
  double frozen_seconds = 0;
  double reap_frozen_seconds = 0;
};

struct Checkpoint {
  inject::FrozenTree frozen;  // still frozen (unless stats.cow): the caller applies the
                              // after-dump policy
  std::vector<pid_t> pids;    // the processes of the image, root first
  CheckpointStats stats;
  std::vector<pid_t> zombies;  // skipped (exited, not yet reaped)
  std::vector<pid_t> omitted;  // left out by libcr (callbacks or libcr_omit)
  // The libcr processes, waiting in cr_checkpoint(): the caller tells them the outcome once
  // the image is in place (destroying it tells them the checkpoint failed).
  resources::LibcrSession libcr;
};

struct CheckpointOptions {
  resources::LibcrRequest request;  // what cr_get_checkpoint_info() shows
  resources::Deadline deadline;     // for the callbacks (-t/--time)
  // Called once every libcr process has its request, with the request's number in the
  // block of `request.requester` (0 if it was not asked): libcr's self-requests wait for it.
  std::function<void(uint32_t)> on_requested;
  // How memory is saved: compression and threads of the page pipeline, and whether to read
  // it from copy-on-write snapshots while the processes already run again (the caller
  // decides when that is safe: the processes must continue after the checkpoint).
  resources::PipelineOptions pipeline;
  bool cow = false;
  // The image file (its identity): a target's descriptors of it are not saved.
  std::optional<image::FileIdentity> image_file;
};

// Checks a request before anything is created or frozen: the processes exist and the caller
// may checkpoint them (ESRCH, EPERM as checkpoint() would fail).
Status check_request(Scope scope, pid_t id);

// Freezes every process of the request (scope + id), then writes their image to w. All are
// frozen before any is dumped. On error every process has been released untouched.
// Fails with ESRCH (nothing to checkpoint), EPERM (a process the caller may not trace),
// CR_EPTRACED (traced by someone else) and the errno of any failing step.
// libcr processes run their callbacks first (see libcr_peer.hpp): ESRCH when all were
// omitted, CR_ETEMPFAIL/CR_EPERMFAIL (or a callback's code) when one cancelled; after a
// permanent failure every process of the request has been killed.
Result<Checkpoint> checkpoint(Scope scope, pid_t id, image::ImageWriter& w,
                              const resources::ProgressFn& progress,
                              const CheckpointOptions& opts = {});

}  // namespace crkit::engine
