// Open files: regular files (by path, flags, offset), unlinked-but-open files (content
// saved), directories, memory character devices, the terminal, pipes leading outside the
// image, sockets (saved as closed, as in BLCR). Dump and restore side by side.
#pragma once

#include <sys/types.h>

#include <map>
#include <vector>

#include "common/result.hpp"
#include "image/image_file.hpp"
#include "image/schema.hpp"
#include "resources/context.hpp"

namespace crkit::resources {

struct FilesDump {
  std::vector<image::FdRecord> fds;
  // content_id -> path to read the content from (/proc/PID/fd/N)
  std::map<uint32_t, std::string> content_sources;
  // content_id -> data buffered in a pipe internal to the image (captured while frozen)
  std::map<uint32_t, std::vector<uint8_t>> pipe_data;
};

// Fails with EBADF naming the fd and its kind for descriptors that cannot be saved.
Result<FilesDump> dump_files(pid_t pid);
Status write_file_contents(const FilesDump& files, image::ImageWriter& w);

// Contents of unlinked files read from the image: content_id -> bytes.
using FileContents = std::map<uint32_t, std::vector<uint8_t>>;

// Runs in the stand-in (ordinary code): rebuilds the fd table exactly, closing everything
// else except *keep_fd, which is moved above all restored fds (its new number is stored
// back). stdio_fds are cr_restart's stdin/stdout/terminal as inherited.
Status restore_files_in_standin(const std::vector<image::FdRecord>& fds,
                                const FileContents& contents, const RestoreTarget& t, int* keep_fd);

}  // namespace crkit::resources
