// Restart orchestration: read an image, create a stand-in process with the original PID,
// turn it into the checkpointed process, release it.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "resources/memory.hpp"

namespace crkit::engine {

struct RestartOptions {
  bool restore_pid = true;  // --restore-pid (default) / --no-restore-pid
  bool restore_pgid = false;
  bool restore_sid = false;
  std::vector<std::pair<std::string, std::string>> relocations;
  resources::ProgressFn progress;
};

struct Restarted {
  pid_t child = 0;         // cr_restart's direct child: the restored process, or the PID
                           // namespace's init that waits for it
  pid_t restored = 0;      // the restored process as seen from here
  pid_t original_pid = 0;  // its PID as it sees itself
  bool in_new_pidns = false;
  UniqueFd status_fd;  // PID-namespace mode: the init writes the wait status here
};

// Restarts the image read from fd. On failure nothing of the stand-in survives and the error
// names the step and the reason. EBUSY: a PID of the image is in use.
Result<Restarted> restart_image(int fd, const std::string& name, const RestartOptions& opts);

}  // namespace crkit::engine
