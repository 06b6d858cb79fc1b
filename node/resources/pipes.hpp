// Pipes and named FIFOs. Dump and restore side by side.
//
// Dump: a pipe is saved with its buffered data (copied with tee(2) from a second read end, so
// the running processes keep it), its capacity and the O_NONBLOCK flag of each end when both
// ends are in the image, or when the other end is closed everywhere (a reader draining a pipe
// whose writers are gone; a writer whose readers are gone). A pipe end that leads to a process
// outside the image becomes cr_restart's stdin (read end) or stdout (write end) at restart,
// as in BLCR. A FIFO is reopened by its path; its data is saved as for a pipe. A FIFO whose
// path was removed is made again (and removed once opened).
#pragma once

#include <map>
#include <span>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "image/schema.hpp"
#include "resources/context.hpp"
#include "resources/files.hpp"

namespace crkit::resources {

// Dump, after every descriptor of every process has a record: decides for each pipe (records
// of kind ExternalPipe from a "pipe:[...]" link) whether it is internal (-> FdKind::Pipe) and
// captures the data of internal pipes and FIFOs (content ids taken from *next_content).
Status classify_pipes(FilesDump& out, uint32_t* next_content);

// Restore: creates each pipe and FIFO of fds once (capacity, data) and opens one descriptor
// per open file description of it into by_file_id. A FIFO is opened (or made again) with the
// credentials of the process that had it open.
Status open_pipes(std::span<const image::FdRecord> fds, const FileContents& contents,
                  const RestoreTarget& t, const CredentialsOf& creds,
                  std::map<uint32_t, UniqueFd>* by_file_id);

}  // namespace crkit::resources
