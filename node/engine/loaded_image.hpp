// An image's metadata read into memory for a restart: every process with its threads,
// mappings and descriptors, and the saved file and pipe contents. The page contents are not
// loaded: they are streamed into the processes afterwards, starting with first_pages.
#pragma once

#include <sys/types.h>

#include <optional>
#include <vector>

#include "common/result.hpp"
#include "image/image_file.hpp"
#include "image/schema.hpp"
#include "resources/files.hpp"

namespace crkit::engine {

struct ProcessImage {
  image::ProcessRecord process;
  std::vector<image::ThreadRecord> threads;
  std::vector<image::VmaRecord> vmas;
  std::vector<image::FdRecord> fds;
};

struct LoadedImage {
  image::ImageInfo info;
  std::vector<ProcessImage> procs;  // image order: the root first, parents before children
  resources::FileContents contents;
  std::optional<image::RawRecord> first_pages;
  uint64_t page_bytes = 0;  // populated pages of all processes (for progress)

  // The process with this (original) pid, or -1.
  int index_of(pid_t pid) const;
  // Records of all processes together.
  std::vector<image::FdRecord> all_fds() const;
  std::vector<image::VmaRecord> all_vmas() const;
};

// Reads everything up to the first Pages record, checking that the records fit together
// (every thread, mapping and descriptor belongs to a process of the image; every process has
// its main thread). EINVAL naming the image and the inconsistency otherwise.
Result<LoadedImage> load_image(image::ImageReader& reader);

}  // namespace crkit::engine
