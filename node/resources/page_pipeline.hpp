// The parallel pipeline that moves page data between processes and the image.
//
// Dump: the pages to save are cut into batches of at most 4 MiB. Each worker thread takes the
// next batch and runs it through every stage: capture (one process_vm_readv of up to 1024
// ranges), zero-page scan (all-zero anonymous pages become holes), compression, checksum;
// then it appends the record to the image, in completion order, under the writer's lock, and
// reuses its buffers. While one worker writes, the others capture and compress, so the stages
// overlap, and memory stays bounded: two buffers per worker, whatever the target's size.
//
// Restore: the calling thread reads the records (large sequential reads, checksums verified)
// and hands page records to workers through a bounded queue; each worker decompresses and
// writes the pages into the process with one process_vm_writev per batch.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "common/result.hpp"
#include "image/image_file.hpp"
#include "image/page_codec.hpp"
#include "resources/memory.hpp"

namespace crkit::resources {

struct PipelineOptions {
  image::CompressionSpec compression;
  unsigned workers = 0;               // 0: one per CPU the checkpointer may run on (at least 2)
  uint64_t batch_bytes = 4ull << 20;  // raw bytes per record at most
};

// A run of pages to save: read from `source` (the process itself, or its copy-on-write
// snapshot), recorded under `pid`.
struct CaptureRun {
  pid_t pid = 0;
  pid_t source = 0;
  uint64_t start = 0;
  uint64_t npages = 0;
  bool skip_zero = false;
};

struct PipelineStats {
  uint64_t raw_bytes = 0;     // bytes of pages stored (after zero pages were left out)
  uint64_t stored_bytes = 0;  // bytes of page data in the image (after compression)
  uint64_t pages_written = 0;
  uint64_t zero_pages_skipped = 0;
  unsigned workers = 0;
};

unsigned pipeline_workers(const PipelineOptions& o);

// Saves the runs' pages into PageBatch records of w. progress(done, total) is called from the
// calling thread only (bytes captured so far, of all runs); returning false cancels
// (ETIMEDOUT). On error nothing more is written; w is left in the middle of the image.
Result<PipelineStats> dump_pages(std::span<const CaptureRun> runs, image::ImageWriter& w,
                                 const PipelineOptions& opts, const ProgressFn& progress);

// Reads the remaining records from reader (`first` was read already, if set) up to the End
// record and writes every page record (PageBatch, or Pages of older images) into the process
// targets[record pid]. Other records are skipped.
Status restore_pages(const std::map<pid_t, pid_t>& targets, image::ImageReader& reader,
                     std::optional<image::RawRecord> first, const PipelineOptions& opts,
                     const ProgressFn& progress, uint64_t total_bytes);

}  // namespace crkit::resources
