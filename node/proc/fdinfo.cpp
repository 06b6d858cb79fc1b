// /proc/PID/fdinfo/FD.
#include <fmt/format.h>

#include "proc/proc.hpp"

namespace crkit::proc {

namespace {

Result<FdInfo> parse_fdinfo_named(std::string_view text, std::string_view file) {
  FdInfo info;
  bool seen_pos = false, seen_flags = false, seen_mnt_id = false;
  size_t lineno = 0;
  for (std::string_view line : detail::split_lines(text)) {
    ++lineno;
    // Type-specific lines ("eventfd-count:", "tfd:", "inotify wd:...", "lock:") are ignored.
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view key = line.substr(0, colon);
    std::string_view v = detail::trim(line.substr(colon + 1));
    bool ok = true;
    if (key == "pos") {
      auto n = detail::to_num<uint64_t>(v);
      if ((ok = n.has_value())) info.pos = *n;
      seen_pos = true;
    } else if (key == "flags") {
      auto n = detail::to_num<uint32_t>(v, 8);
      if ((ok = n.has_value())) info.flags = *n;
      seen_flags = true;
    } else if (key == "mnt_id") {
      auto n = detail::to_num<int>(v);
      if ((ok = n.has_value())) info.mnt_id = *n;
      seen_mnt_id = true;
    } else if (key == "ino") {  // absent before Linux 5.14
      auto n = detail::to_num<uint64_t>(v);
      if ((ok = n.has_value())) info.ino = *n;
    }
    if (!ok) return detail::parse_error(file, lineno, fmt::format("bad {} value \"{}\"", key, v));
  }
  const char* missing = !seen_pos      ? "pos"
                        : !seen_flags  ? "flags"
                        : !seen_mnt_id ? "mnt_id"
                                       : nullptr;
  if (missing) return detail::parse_error(file, 0, fmt::format("no {}: line", missing));
  return info;
}

}  // namespace

Result<FdInfo> parse_fdinfo(std::string_view text) {
  return parse_fdinfo_named(text, "fdinfo");
}

Result<FdInfo> read_fdinfo(pid_t pid, int fd) {
  std::string path = fmt::format("/proc/{}/fdinfo/{}", pid, fd);
  CRKIT_ASSIGN(std::string text, read_file(path));
  return parse_fdinfo_named(text, path);
}

}  // namespace crkit::proc
