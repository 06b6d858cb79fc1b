// What the per-resource dump and restore functions get to work with.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/remote_scratch.hpp"
#include "image/schema.hpp"
#include "inject/remote_syscall.hpp"

namespace crkit::resources {

// A shared-memory object (MAP_SHARED anonymous, memfd, SysV segment, deleted shared file) by
// its identity at checkpoint time.
using ShmKey = std::pair<uint64_t, uint64_t>;  // (dev, ino)

// A frozen checkpoint target. Remote calls run in its main thread unless a resource needs a
// specific thread.
struct DumpTarget {
  pid_t pid = 0;
  std::vector<pid_t> tids;
  uint64_t site = 0;  // a syscall instruction in the target
  inject::RemoteCaller* main = nullptr;
  engine::RemoteScratch* scratch = nullptr;
};

// A stand-in being turned into the restored process. `real_*` ids are how the restorer
// (ptrace, /proc) sees the threads; `v*` ids are how the process sees itself (differ when
// it restarts inside a new PID namespace).
struct RestoreTarget {
  pid_t real_pid = 0;
  pid_t vpid = 0;
  std::map<pid_t, pid_t> real_tid_of;  // saved (virtual) tid -> real tid
  uint64_t site = 0;                   // moves with the vDSO
  inject::RemoteCaller* main = nullptr;
  engine::RemoteScratch* scratch = nullptr;
  // Paths remapped with --relocate (applied by relocate()).
  std::vector<std::pair<std::string, std::string>> relocations;
  bool can_set_exe = false;        // CAP_CHECKPOINT_RESTORE available for PR_SET_MM_MAP exe_fd
  bool restarter_is_root = false;  // else the restored process gets no capabilities at all
  bool isolate_terminal = false;   // root restarting another user's image: no terminal of ours
  // The shared-memory objects the process maps, as descriptors it holds (inherited from the
  // process that made them; mapped, then closed by rebuild_address_space).
  std::map<ShmKey, long> shm_fds;

  std::string relocate(const std::string& path) const;
};

// The identity recorded for a file referenced by path (checked again at restart).
image::FileIdentity file_identity(const struct stat& st);

}  // namespace crkit::resources
