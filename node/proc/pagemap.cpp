// /proc/PID/pagemap.
#include <fcntl.h>
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
