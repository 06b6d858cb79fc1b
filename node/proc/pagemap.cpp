// /proc/PID/pagemap.
#include <fcntl.h>
#include <linux/types.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "proc/proc.hpp"

namespace crkit::proc {

namespace {
constexpr uint64_t kPageSize = 4096;  // x86-64 base pages
constexpr size_t kEntrySize = sizeof(uint64_t);
constexpr size_t kChunkEntries = 8192;  // 64 KiB per pread, 32 MiB of address space

// PAGEMAP_SCAN (linux/fs.h of Linux 6.7; bookworm's headers are older). ABI, so fixed here.
constexpr uint64_t kPageIsFile = 1 << 2;
constexpr uint64_t kPageIsPresent = 1 << 3;
constexpr uint64_t kPageIsSwapped = 1 << 4;
struct PageRegion {
  __u64 start, end, categories;
};
struct PmScanArg {
  __u64 size, flags, start, end, walk_end, vec, vec_len, max_pages;
  __u64 category_inverted, category_mask, category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
}  // namespace

Result<Pagemap> Pagemap::open(pid_t pid) {
  std::string path = fmt::format("/proc/{}/pagemap", pid);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return proc_error(errno, "opening", path);
  return Pagemap(fd, pid);
}

::crkit::Status Pagemap::read(uint64_t start, uint64_t end, std::vector<PagemapEntry>& out) const {
  std::string path = fmt::format("/proc/{}/pagemap", pid_);
  if (start % kPageSize != 0 || end % kPageSize != 0 || end < start) {
    return fail(EINVAL, fmt::format("reading {}: bad range {:#x}-{:#x} (must be page-aligned, "
                                    "start <= end)",
                                    path, start, end));
  }
  if (fd_ < 0) return fail(EBADF, fmt::format("reading {}: pagemap is not open", path));
  const size_t count = (end - start) / kPageSize;
  out.assign(count, PagemapEntry{});
  std::vector<uint64_t> buf;
  size_t done = 0;  // entries filled
  while (done < count) {
    size_t want = std::min(count - done, kChunkEntries);
    buf.resize(want);
    auto* bytes = reinterpret_cast<char*>(buf.data());
    size_t got = 0;  // bytes of this chunk read
    const off_t base = static_cast<off_t>((start / kPageSize + done) * kEntrySize);
    while (got < want * kEntrySize) {
      ssize_t n =
          ::pread(fd_, bytes + got, want * kEntrySize - got, base + static_cast<off_t>(got));
      if (n < 0) {
        if (errno == EINTR) continue;
        Error e = proc_error(errno, "reading", path);
        e.message += fmt::format(" (range {:#x}-{:#x})", start, end);
        return fail(std::move(e));
      }
      if (n == 0) {
        uint64_t addr = start + (done + got / kEntrySize) * kPageSize;
        return fail(EIO, fmt::format("reading {}: unexpected end of file at address {:#x} "
                                     "(beyond the user address space?)",
                                     path, addr));
      }
      got += static_cast<size_t>(n);
    }
    for (size_t i = 0; i < want; ++i) out[done + i].raw = buf[i];
    done += want;
  }
  return {};
}

Result<std::optional<std::vector<std::pair<uint64_t, uint64_t>>>> Pagemap::scan_populated(
    uint64_t start, uint64_t end, bool not_file) const {
  using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;
  Ranges out;
  PageRegion vec[256];
  for (uint64_t from = start; from < end;) {
    PmScanArg a{};
    a.size = sizeof a;
    a.start = from;
    a.end = end;
    a.vec = reinterpret_cast<uint64_t>(vec);
    a.vec_len = std::size(vec);
    // A page matches when it is present or swapped and, with not_file, PAGE_IS_FILE is 0.
    a.category_anyof_mask = kPageIsPresent | kPageIsSwapped;
    if (not_file) a.category_inverted = a.category_mask = kPageIsFile;
    a.return_mask = kPageIsPresent | kPageIsSwapped;
    long n = ::ioctl(fd_, kPagemapScan, &a);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOTTY || (errno == EINVAL && out.empty() && from == start))
        return std::optional<Ranges>{};  // no PAGEMAP_SCAN here
      return fail(proc_error(errno, "scanning", fmt::format("/proc/{}/pagemap", pid_)));
    }
    for (long i = 0; i < n; ++i) {
      if (!out.empty() && out.back().second == vec[i].start)
        out.back().second = vec[i].end;
      else
        out.emplace_back(vec[i].start, vec[i].end);
    }
    // The kernel stops early when vec is full; walk_end says where.
    if (a.walk_end <= from) break;
    from = a.walk_end;
  }
  return std::optional<Ranges>(std::move(out));
}

Pagemap::~Pagemap() {
  if (fd_ >= 0) ::close(fd_);
}

Pagemap::Pagemap(Pagemap&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), pid_(std::exchange(o.pid_, 0)) {}

Pagemap& Pagemap::operator=(Pagemap&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    pid_ = std::exchange(o.pid_, 0);
  }
  return *this;
}

}  // namespace crkit::proc
