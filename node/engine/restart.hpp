// Restart orchestration: read an image, create stand-in processes with the original PIDs in
// tree order (standin.hpp), turn each into its checkpointed process, release them together.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "resources/memory.hpp"
#include "resources/page_pipeline.hpp"

namespace crkit::engine {

struct RestartOptions {
  bool restore_pid = true;  // --restore-pid (default) / --no-restore-pid
  bool restore_pgid = false;
  bool restore_sid = false;
  std::vector<std::pair<std::string, std::string>> relocations;
  resources::ProgressFn progress;
  resources::PipelineOptions pipeline;  // threads that read and fill memory
  // Polled while the restart waits for its stand-ins: a signal number cancels the restart
  // (everything made so far is killed; EINTR).
  std::function<int()> cancel_signal;
  // libcr: cr_get_restart_info() in the restored processes shows these.
  pid_t requester = 0;  // 0: this process
  std::string source;   // the context file's path
  // cr_request_restart(): the root (or the PID namespace's init) is made with CLONE_PARENT,
  // a child of our parent, the requester.
  bool as_sibling = false;
};

struct Restarted {
  pid_t child = 0;         // cr_restart's direct child: the root of the restored tree, or the
                           // PID namespace's init that waits for it
  pid_t restored = 0;      // the root of the restored tree as seen from here
  pid_t original_pid = 0;  // its PID as it sees itself
  std::vector<pid_t> all;  // every restored process as seen from here (root first)
  bool in_new_pidns = false;
  UniqueFd status_fd;  // PID-namespace mode: the init writes the root's wait status here
};

// Restarts the image read from fd. On failure no process of the restart survives and the
// error names the step, the process and the reason. EBUSY: a PID of the image is in use.
Result<Restarted> restart_image(int fd, const std::string& name, const RestartOptions& opts);

}  // namespace crkit::engine
