#include "engine/remote_scratch.hpp"

#include <sys/mman.h>
#include <sys/syscall.h>

#include <fmt/format.h>

#include "inject/remote_memory.hpp"

namespace crkit::engine {

Result<RemoteScratch> RemoteScratch::map(pid_t pid, inject::RemoteCaller& caller, uint64_t hint) {
  uint64_t flags = MAP_PRIVATE | MAP_ANONYMOUS | (hint ? MAP_FIXED_NOREPLACE : 0);
  CRKIT_ASSIGN(
      long addr,
      caller.check(fmt::format("mapping a scratch area in process {}", pid), SYS_mmap,
                   {hint, kSize, PROT_READ | PROT_WRITE, flags, static_cast<uint64_t>(-1), 0}));
  if (hint && static_cast<uint64_t>(addr) != hint)
    return fail(EEXIST, fmt::format("scratch area of process {} landed at {:#x} instead of {:#x}",
                                    pid, addr, hint));
  return RemoteScratch(pid, static_cast<uint64_t>(addr));
}

Status RemoteScratch::unmap(inject::RemoteCaller& caller) {
  CRKIT_TRY(caller.check(fmt::format("unmapping the scratch area of process {}", pid_), SYS_munmap,
                         {addr_, kSize}));
  return {};
}

Result<uint64_t> RemoteScratch::put(uint64_t offset, std::span<const uint8_t> data) {
  if (offset + data.size() > kSize) return fail(E2BIG, "remote scratch area overflow");
  CRKIT_TRY(inject::write_memory(pid_, addr_ + offset, data));
  return addr_ + offset;
}

Result<uint64_t> RemoteScratch::put_string(uint64_t offset, const std::string& s) {
  std::string z = s;
  z.push_back('\0');
  return put(offset,
             std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(z.data()), z.size()));
}

Status RemoteScratch::get(uint64_t offset, std::span<uint8_t> out) const {
  if (offset + out.size() > kSize) return fail(E2BIG, "remote scratch area overflow");
  return inject::read_memory(pid_, addr_ + offset, out);
}

}  // namespace crkit::engine
