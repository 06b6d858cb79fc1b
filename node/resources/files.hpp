// Open files: regular files (by path, flags, offset), unlinked-but-open files (content
// saved), directories, memory character devices, the terminal, sockets (saved as closed, as
// in BLCR); pipes and FIFOs are in pipes.hpp. Dump and restore side by side.
//
// Dump covers every process of the image at once, so that descriptors sharing one open file
// description - in one process (dup) or across processes (inheritance) - get the same
// file_id.
// Restore opens every open file description of the image once, in the process that creates
// the stand-ins, before any of them exists (OpenFiles); each stand-in inherits them all and
// installs its own at the saved numbers. Sharing across processes thus comes from fork(), as
// it did originally.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "image/image_file.hpp"
#include "image/schema.hpp"
#include "resources/context.hpp"

namespace crkit::resources {

struct FilesDump {
  std::vector<image::FdRecord> fds;  // by process (in the order given), then by fd
  // content_id -> path to read the content from (/proc/PID/fd/N)
  std::map<uint32_t, std::string> content_sources;
  // content_id -> data buffered in a pipe or FIFO (captured while frozen); for a pipe in
  // packet mode (O_DIRECT) also the size of each packet
  std::map<uint32_t, std::vector<uint8_t>> pipe_data;
  std::map<uint32_t, std::vector<uint64_t>> pipe_packets;
};

// Descriptors a checkpoint leaves out: libcr's own (by process), and any descriptor of the
// image file being written (restoring it would truncate the image back).
struct SkipFds {
  std::map<pid_t, std::set<int>> by_pid;
  std::optional<image::FileIdentity> image_file;
};

// The descriptors of all (frozen) processes. Fails with EBADF naming the process, the fd and
// its kind for descriptors that cannot be saved.
Result<FilesDump> dump_files(std::span<const pid_t> pids, const SkipFds& skip = {});
Status write_file_contents(const FilesDump& files, image::ImageWriter& w);

// Contents of unlinked files and of pipes read from the image, by content_id: the bytes and
// the size of each FileContent record they came in (for a packet-mode pipe: its packets).
struct SavedContent {
  std::vector<uint8_t> bytes;
  std::vector<uint64_t> chunks;
};
using FileContents = std::map<uint32_t, SavedContent>;

// Everything the image's processes have open, opened once (see the header comment).
struct OpenFiles {
  std::map<uint32_t, UniqueFd> descriptions;  // file_id -> fd
  std::map<ShmKey, UniqueFd> shared_memory;   // object -> memfd (see memory.hpp)
};

// The credentials files of a process are opened with (root restarting a user's image).
using CredentialsOf = std::function<const image::Credentials*(pid_t)>;

// Opens every open file description of fds (all processes). shared_memory (made by
// create_shared_memory) is moved into the result; unlinked files that are such an object
// (an open memfd) are opened from it, so that the descriptor and the mappings stay one.
Result<OpenFiles> open_files(std::span<const image::FdRecord> fds, const FileContents& contents,
                             std::map<ShmKey, UniqueFd> shared_memory, const RestoreTarget& t,
                             const CredentialsOf& creds);

// BLCR semantics: a regular file open for writing goes back to its checkpoint-time size (so
// output written after the checkpoint is replaced by the restarted run's). Remote, in the
// restored process, as the last step that can fail: a restart that fails earlier leaves the
// files as they were. A dry run (done for every process first) checks that it can be done.
Status truncate_written_files(RestoreTarget& t, std::span<const image::FdRecord> mine,
                              bool dry_run);

// Runs in a stand-in (ordinary code): installs the process's descriptors (mine) from files at
// their saved numbers with their close-on-exec flags and closes everything else except the
// descriptors in *keep, which are moved above all restored ones (their new numbers are
// stored back).
Status install_fd_table(std::span<const image::FdRecord> mine, const OpenFiles& files,
                        std::vector<int>* keep);

}  // namespace crkit::resources
