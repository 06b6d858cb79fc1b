// /proc/PID/auxv.
#include <cstring>

#include <fmt/format.h>

#include "proc/proc.hpp"

namespace crkit::proc {

namespace {

Result<std::vector<uint64_t>> parse_auxv_named(std::string_view bytes, std::string_view file) {
  constexpr size_t kWord = sizeof(uint64_t);
  if (bytes.size() % kWord != 0) {
    return detail::parse_error(
        file, 0, fmt::format("size {} is not a multiple of {} bytes", bytes.size(), kWord));
  }
  std::vector<uint64_t> out;
  for (size_t off = 0; off + 2 * kWord <= bytes.size(); off += 2 * kWord) {
    uint64_t type, value;  // native endian words
    std::memcpy(&type, bytes.data() + off, kWord);
    std::memcpy(&value, bytes.data() + off + kWord, kWord);
    out.push_back(type);
    out.push_back(value);
    if (type == 0) return out;  // AT_NULL ends the vector (and is included)
  }
  return detail::parse_error(file, 0, "no AT_NULL terminator");
}

}  // namespace

Result<std::vector<uint64_t>> parse_auxv(std::string_view bytes) {
  return parse_auxv_named(bytes, "auxv");
}

Result<std::vector<uint64_t>> read_auxv(pid_t pid) {
  std::string path = fmt::format("/proc/{}/auxv", pid);
  CRKIT_ASSIGN(std::string bytes, read_file(path));
  return parse_auxv_named(bytes, path);
}

}  // namespace crkit::proc
