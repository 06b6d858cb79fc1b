// Reading and writing another process's memory.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>

#include "common/result.hpp"

namespace crkit::inject {

// Reads [addr, addr+out.size()) of pid with process_vm_readv; falls back to /proc/PID/mem
// (which ignores protections, e.g. PROT_NONE regions) when that fails with EFAULT.
Status read_memory(pid_t pid, uint64_t addr, std::span<uint8_t> out);
// Writes data at addr in pid (process_vm_writev, then /proc/PID/mem on EFAULT).
Status write_memory(pid_t pid, uint64_t addr, std::span<const uint8_t> data);

}  // namespace crkit::inject
