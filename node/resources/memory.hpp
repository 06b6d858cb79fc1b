// Memory: the VMA layout and the page contents. Dump and restore side by side.
//
// Dump: /proc/PID/smaps gives the layout, /proc/PID/pagemap which pages exist. Anonymous
// pages are saved (all-zero ones become holes); file-backed pages that still equal the file
// are saved by reference (path, offset, identity); copy-on-write-modified pages of private
// file mappings are saved. The vDSO is not saved: the restorer moves the new kernel's vDSO
// to the old address.
// Restore: the stand-in's own mappings are removed, the saved layout is rebuilt with remote
// mmap() calls, and pages are written into it.
//
// Shared memory between processes (MAP_SHARED|MAP_ANONYMOUS inherited over fork, memfds,
// deleted shared files, SysV segments) is saved once per object: the first process that maps
// a page of it saves that page. At restart each object is one memfd, made before the
// stand-ins exist and inherited by every process that maps it; a page written through one
// mapping is seen through all.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "image/image_file.hpp"
#include "image/schema.hpp"
#include "proc/proc.hpp"
#include "resources/context.hpp"

namespace crkit::resources {

struct PageRun {
  uint64_t start = 0;
  uint64_t npages = 0;
  bool skip_zero = false;  // anonymous: all-zero pages need not be stored
};

struct MemoryPlan {
  std::vector<image::VmaRecord> vmas;
  std::vector<PageRun> runs;
  uint64_t candidate_pages = 0;
};

// Called as bytes are processed; returning false cancels the operation (ETIMEDOUT).
using ProgressFn = std::function<bool(uint64_t done_bytes, uint64_t total_bytes)>;

// Remote calls into the frozen target, when available, refine the plan (mincore).
struct RemoteAccess {
  inject::RemoteCaller* caller = nullptr;
  engine::RemoteScratch* scratch = nullptr;
};
// Pages of shared-memory objects already planned by another process of the image:
// object -> page indexes within the object.
using SharedPagesSeen = std::map<ShmKey, std::set<uint64_t>>;
Result<MemoryPlan> plan_memory(pid_t pid, const std::vector<proc::MapEntry>& smaps,
                               const RemoteAccess* remote = nullptr,
                               SharedPagesSeen* shared_seen = nullptr);
struct CaptureRun;
struct PipelineOptions;
// The plan's page runs for the page pipeline (page_pipeline.hpp): recorded under pid, read
// from source (pid itself, or its copy-on-write snapshot).
std::vector<CaptureRun> capture_runs(pid_t pid, pid_t source, const MemoryPlan& plan);

// Address ranges the stand-in may use for the scratch area: free in the saved layout and in
// the stand-in's current one.
Result<uint64_t> find_free_range(const std::vector<image::VmaRecord>& saved,
                                 const std::vector<proc::MapEntry>& current, uint64_t size,
                                 const std::vector<std::pair<uint64_t, uint64_t>>& also_taken = {});

// Checks that files mapped by reference still match their saved identity (private
// mappings; shared ones need only exist), looked at with owner's file rights.
Status check_mapped_files(const RestoreTarget& t, const std::vector<image::VmaRecord>& vmas,
                          const image::Credentials* owner = nullptr);

// Creates the image's shared-memory objects (ordinary code, in the process that creates the
// stand-ins): one memfd per object, named as the original memfd was, sized to cover every
// mapping of it. vmas: all processes'.
Result<std::map<ShmKey, UniqueFd>> create_shared_memory(std::span<const image::VmaRecord> vmas);
// The objects a process maps.
std::vector<ShmKey> shared_memory_of(std::span<const image::VmaRecord> vmas);

// Replaces the stand-in's address space with the saved layout (contents not yet written).
// Shared-memory objects are mapped from t.shm_fds, which are closed afterwards.
Status rebuild_address_space(RestoreTarget& t, const std::vector<image::VmaRecord>& vmas);

// Writes the pages of the remaining page records from reader into the processes being
// restored (by the pid each record names), in parallel (page_pipeline.hpp). `first` is a
// record already read from the stream (the first page record), if any.
Status fill_pages(const std::map<pid_t, RestoreTarget*>& targets, image::ImageReader& reader,
                  std::optional<image::RawRecord> first, const PipelineOptions& opts,
                  const ProgressFn& progress, uint64_t total_bytes);

// Sets the final protections after the contents are in place.
Status finalize_protections(RestoreTarget& t, const std::vector<image::VmaRecord>& vmas);

}  // namespace crkit::resources
