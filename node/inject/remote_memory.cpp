#include "inject/remote_memory.hpp"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "common/unique_fd.hpp"

namespace crkit::inject {
namespace {

Status proc_mem_io(pid_t pid, uint64_t addr, uint8_t* buf, size_t len, bool write) {
  std::string path = fmt::format("/proc/{}/mem", pid);
  UniqueFd fd(::open(path.c_str(), (write ? O_WRONLY : O_RDONLY) | O_CLOEXEC));
  if (!fd) return fail_errno(fmt::format("opening {}", path));
  size_t done = 0;
  while (done < len) {
    ssize_t n = write ? ::pwrite(fd.get(), buf + done, len - done, static_cast<off_t>(addr + done))
                      : ::pread(fd.get(), buf + done, len - done, static_cast<off_t>(addr + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return fail_sys(n < 0 ? errno : EIO,
                      fmt::format("{} memory of process {} at {:#x} ({} bytes)",
                                  write ? "writing" : "reading", pid, addr + done, len - done));
    done += static_cast<size_t>(n);
  }
  return {};
}

}  // namespace

Status read_memory(pid_t pid, uint64_t addr, std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    iovec local{out.data() + done, out.size() - done};
    iovec remote{reinterpret_cast<void*>(addr + done), out.size() - done};
    ssize_t n = ::process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // Unreadable through the normal path (PROT_NONE, partial): use /proc/PID/mem.
      return proc_mem_io(pid, addr + done, out.data() + done, out.size() - done, false);
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

Status write_memory(pid_t pid, uint64_t addr, std::span<const uint8_t> data) {
  size_t done = 0;
  while (done < data.size()) {
    iovec local{const_cast<uint8_t*>(data.data()) + done, data.size() - done};
    iovec remote{reinterpret_cast<void*>(addr + done), data.size() - done};
    ssize_t n = ::process_vm_writev(pid, &local, 1, &remote, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return proc_mem_io(pid, addr + done, const_cast<uint8_t*>(data.data()) + done,
                         data.size() - done, true);
    done += static_cast<size_t>(n);
  }
  return {};
}

}  // namespace crkit::inject
