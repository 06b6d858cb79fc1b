// /proc/PID/maps and /proc/PID/smaps.
#include <algorithm>

#include <fmt/format.h>

#include "proc/proc.hpp"

namespace crkit::proc {

namespace {

constexpr std::string_view kDeleted = " (deleted)";

// Takes the text up to the next ' ' (exclusive) and skips the single separator.
std::string_view take_field(std::string_view& s) {
  size_t sp = s.find(' ');
  std::string_view f = s.substr(0, sp);
  s.remove_prefix(sp == std::string_view::npos ? s.size() : sp + 1);
  return f;
}

// Parses "start-end perms offset major:minor inode [path]"; returns the reason on failure.
std::optional<std::string> parse_map_line(std::string_view line, MapEntry& e) {
  std::string_view s = line;
  std::string_view range = take_field(s);
  size_t dash = range.find('-');
  if (dash == std::string_view::npos) return "missing '-' in address range";
  auto start = detail::to_num<uint64_t>(range.substr(0, dash), 16);
  auto end = detail::to_num<uint64_t>(range.substr(dash + 1), 16);
  if (!start || !end) return "bad address range";
  if (*end < *start) return "address range ends before it starts";
  e.start = *start;
  e.end = *end;

  std::string_view perms = take_field(s);
  if (perms.size() != 4 || (perms[0] != 'r' && perms[0] != '-') ||
      (perms[1] != 'w' && perms[1] != '-') || (perms[2] != 'x' && perms[2] != '-') ||
      (perms[3] != 's' && perms[3] != 'p')) {
    return "bad permissions";
  }
  e.read = perms[0] == 'r';
  e.write = perms[1] == 'w';
  e.exec = perms[2] == 'x';
  e.shared = perms[3] == 's';

  auto offset = detail::to_num<uint64_t>(take_field(s), 16);
  if (!offset) return "bad offset";
  e.offset = *offset;

  std::string_view dev = take_field(s);
  size_t colon = dev.find(':');
  if (colon == std::string_view::npos) return "bad device";
  auto major = detail::to_num<uint32_t>(dev.substr(0, colon), 16);
  auto minor = detail::to_num<uint32_t>(dev.substr(colon + 1), 16);
  if (!major || !minor) return "bad device";
  e.dev_major = *major;
  e.dev_minor = *minor;

  auto inode = detail::to_num<uint64_t>(take_field(s), 10);
  if (!inode) return "bad inode";
  e.inode = *inode;

  // The path is padded to a column with spaces; it may itself contain spaces.
  size_t first = s.find_first_not_of(' ');
  s.remove_prefix(first == std::string_view::npos ? s.size() : first);
  if (s.size() >= kDeleted.size() && s.substr(s.size() - kDeleted.size()) == kDeleted) {
    s.remove_suffix(kDeleted.size());
    e.deleted = true;
  }
  e.path = std::string(s);
  return std::nullopt;
}

std::string quoted(std::string_view line) {
  constexpr size_t kMax = 160;
  if (line.size() > kMax) return fmt::format("\"{}...\"", line.substr(0, kMax));
  return fmt::format("\"{}\"", line);
}

Result<std::vector<MapEntry>> parse_maps_named(std::string_view text, std::string_view file) {
  std::vector<MapEntry> out;
  size_t lineno = 0;
  for (std::string_view line : detail::split_lines(text)) {
    ++lineno;
    if (line.empty()) continue;
    MapEntry e;
    if (auto why = parse_map_line(line, e)) {
      return detail::parse_error(file, lineno, fmt::format("{} in {}", *why, quoted(line)));
    }
    out.push_back(std::move(e));
  }
  return out;
}

Result<std::vector<MapEntry>> parse_smaps_named(std::string_view text, std::string_view file) {
  std::vector<MapEntry> out;
  size_t lineno = 0;
  for (std::string_view line : detail::split_lines(text)) {
    ++lineno;
    if (line.empty()) continue;
    std::string_view first = line.substr(0, line.find_first_of(" \t"));
    if (!first.empty() && first.back() == ':') {  // "Key: value" line of the current entry
      if (out.empty()) {
        return detail::parse_error(file, lineno,
                                   fmt::format("{} before any mapping line", quoted(line)));
      }
      if (first == "VmFlags:") {
        auto& flags = out.back().vm_flags;
        flags.clear();
        for (std::string_view f : detail::split_ws(line.substr(first.size()))) {
          flags.emplace_back(f);
        }
      }
      continue;
    }
    MapEntry e;
    if (auto why = parse_map_line(line, e)) {
      return detail::parse_error(file, lineno, fmt::format("{} in {}", *why, quoted(line)));
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

bool MapEntry::has_flag(std::string_view f) const {
  return std::find(vm_flags.begin(), vm_flags.end(), f) != vm_flags.end();
}

Result<std::vector<MapEntry>> parse_maps(std::string_view text) {
  return parse_maps_named(text, "maps");
}

Result<std::vector<MapEntry>> parse_smaps(std::string_view text) {
  return parse_smaps_named(text, "smaps");
}

Result<std::vector<MapEntry>> read_maps(pid_t pid) {
  std::string path = fmt::format("/proc/{}/maps", pid);
  CRKIT_ASSIGN(std::string text, read_file(path));
  return parse_maps_named(text, path);
}

Result<std::vector<MapEntry>> read_smaps(pid_t pid) {
  std::string path = fmt::format("/proc/{}/smaps", pid);
  CRKIT_ASSIGN(std::string text, read_file(path));
  return parse_smaps_named(text, path);
}

}  // namespace crkit::proc
