// Process-wide attributes: identity, credentials, cwd, umask, rlimits, personality, the mm
// layout (brk, arg/env, auxv, exe), signal handlers, itimers and shared pending signals.
// Dump and restore side by side.
#pragma once

#include <sys/types.h>

#include <vector>

#include "common/result.hpp"
#include "image/schema.hpp"
#include "resources/context.hpp"

namespace crkit::resources {

Result<image::ProcessRecord> dump_process(const DumpTarget& t);

// Runs in the stand-in itself (ordinary code, before it is seized): cwd, umask, personality,
// dumpable.
Status apply_process_attrs_in_standin(const image::ProcessRecord& p, const RestoreTarget& t);

// Runs in the stand-in first: when root restarts another user's image, files are opened
// with that user's file-system ids and groups.
Status assume_file_credentials(const image::ProcessRecord& p);

// The same for the lifetime of the object (the process that opens the files of all
// processes of an image, one process's files at a time). Inactive when c is null, the
// restarter is not root or the files are root's.
class FileCredentials {
 public:
  static Result<FileCredentials> assume(const image::Credentials* c);
  FileCredentials(FileCredentials&& o) noexcept;
  FileCredentials& operator=(FileCredentials&&) = delete;
  FileCredentials(const FileCredentials&) = delete;
  ~FileCredentials();

 private:
  FileCredentials() = default;
  bool active_ = false;
  uid_t old_fsuid_ = 0;
  gid_t old_fsgid_ = 0;
  std::vector<gid_t> old_groups_;
};

// Remote, after the address space is in place.
Status restore_mm_layout(RestoreTarget& t, const image::ProcessRecord& p);
Status restore_sigactions(RestoreTarget& t, const image::ProcessRecord& p);
Status restore_itimers(RestoreTarget& t, const image::ProcessRecord& p);
Status restore_shared_pending(RestoreTarget& t, const image::ProcessRecord& p);
Status restore_comm(RestoreTarget& t, const image::ProcessRecord& p);
// Resource limits, late (remote): the transplant itself needs descriptors and memory the
// process's own limits might not allow; before the credentials (raising a hard limit needs
// the restarter's privilege).
Status restore_rlimits(RestoreTarget& t, const image::ProcessRecord& p);
// Last, after the credentials (a change of uid resets it).
Status restore_dumpable(RestoreTarget& t, const image::ProcessRecord& p);
// The parent-death signal (the stand-in's own one, SIGKILL, is replaced). An orphan gets
// none: its original parent is gone, so the signal was spent.
Status restore_pdeath_signal(RestoreTarget& t, const image::ProcessRecord& p, bool orphan);

}  // namespace crkit::resources
