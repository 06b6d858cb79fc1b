// A scratch mapping inside a frozen process: arguments and results of remote system calls
// (paths, structs) travel through it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>

#include "common/result.hpp"
#include "inject/remote_syscall.hpp"

namespace crkit::engine {

class RemoteScratch {
 public:
  static constexpr uint64_t kSize = 64 * 1024;

  // Maps kSize bytes of read/write anonymous memory in pid through caller (at `hint` with
  // MAP_FIXED_NOREPLACE when hint != 0).
  static Result<RemoteScratch> map(pid_t pid, inject::RemoteCaller& caller, uint64_t hint = 0);
  Status unmap(inject::RemoteCaller& caller);

  uint64_t addr() const { return addr_; }
  uint64_t end() const { return addr_ + kSize; }
  // Writes bytes at offset and returns the remote address.
  Result<uint64_t> put(uint64_t offset, std::span<const uint8_t> data);
  Result<uint64_t> put_string(uint64_t offset, const std::string& s);
  template <class T>
  Result<uint64_t> put_struct(uint64_t offset, const T& v) {
    return put(offset, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), sizeof(T)));
  }
  Status get(uint64_t offset, std::span<uint8_t> out) const;
  template <class T>
  Result<T> get_struct(uint64_t offset) const {
    T v{};
    CRKIT_TRY(get(offset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof(T))));
    return v;
  }

 private:
  RemoteScratch(pid_t pid, uint64_t addr) : pid_(pid), addr_(addr) {}
  pid_t pid_;
  uint64_t addr_;
};

}  // namespace crkit::engine
