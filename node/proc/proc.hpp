// Parsers for /proc/PID files. Each parse_* takes file text (so it is unit-testable on
// fixtures); each read_* reads the live file and names it in any error.
#pragma once

#include <sys/types.h>

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.hpp"

namespace crkit::proc {

// Reads a whole (small) file; error names the path.
Result<std::string> read_file(const std::string& path);
Result<std::string> read_link(const std::string& path);

// The error for a failed operation ("reading", "opening", ...) on a path: "<op> <path>: <errno
// text>", code = err. ENOENT/ESRCH on a path under /proc/PID (or /proc/PID/task/TID) whose
// process (thread) no longer exists becomes ESRCH, "<op> <path>: process PID does not exist".
Error proc_error(int err, std::string_view op, const std::string& path);

// One line of /proc/PID/maps, plus VmFlags from smaps when read_smaps() is used.
struct MapEntry {
  uint64_t start = 0, end = 0;
  bool read = false, write = false, exec = false, shared = false;  // "rwxs"/"rwxp"
  uint64_t offset = 0;
  uint32_t dev_major = 0, dev_minor = 0;
  uint64_t inode = 0;
  std::string path;      // as printed, without the " (deleted)" suffix
  bool deleted = false;  // path ended with " (deleted)"
  // smaps "VmFlags:" mnemonics ("gd", "dd", ...), empty for maps.
  std::vector<std::string> vm_flags;
  bool has_flag(std::string_view f) const;
};
Result<std::vector<MapEntry>> parse_maps(std::string_view text);   // /proc/PID/maps format
Result<std::vector<MapEntry>> parse_smaps(std::string_view text);  // also fills vm_flags
Result<std::vector<MapEntry>> read_maps(pid_t pid);
Result<std::vector<MapEntry>> read_smaps(pid_t pid);

// /proc/PID/stat fields crkit needs (field numbers as in proc(5)).
struct Stat {
  pid_t pid = 0;
  std::string comm;  // field 2 without parentheses (may contain spaces and ')')
  char state = '?';  // field 3
  pid_t ppid = 0, pgrp = 0, session = 0;                            // 4, 5, 6
  int tty_nr = 0;                                                   // 7
  uint64_t flags = 0;                                               // 9
  int64_t num_threads = 0;                                          // 20
  uint64_t start_time = 0;                                          // 22 (clock ticks since boot)
  uint64_t start_code = 0, end_code = 0, start_stack = 0;           // 26, 27, 28
  int exit_signal = 0;                                              // 38
  uint64_t start_data = 0, end_data = 0, start_brk = 0;             // 45, 46, 47
  uint64_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;  // 48..51
  int exit_code = 0;                                                // 52
};
Result<Stat> parse_stat(std::string_view text);
// Exited and not yet reaped: it holds its PID but runs no more. A process whose main thread
// exited while other threads run also shows state Z, but counts those threads: it is alive.
inline bool is_zombie(const Stat& s) {
  return (s.state == 'Z' || s.state == 'X') && s.num_threads <= 1;
}
Result<Stat> read_stat(pid_t pid);
Result<Stat> read_task_stat(pid_t pid, pid_t tid);

// /proc/PID/status fields.
struct Status {
  std::string name;
  char state = '?';
  pid_t tgid = 0, pid = 0, ppid = 0, tracer_pid = 0;
  uint32_t uid[4] = {}, gid[4] = {};  // real, effective, saved, fs
  std::vector<uint32_t> groups;
  uint32_t umask = 022;
  std::vector<pid_t> nstgid, nspid, nspgid, nssid;  // outermost first
  int threads = 0;
  uint64_t sig_pnd = 0, shd_pnd = 0, sig_blk = 0, sig_ign = 0, sig_cgt = 0;
  uint64_t cap_inh = 0, cap_prm = 0, cap_eff = 0, cap_bnd = 0, cap_amb = 0;
  int no_new_privs = 0;
  int seccomp = 0;
};
Result<Status> parse_status(std::string_view text);
Result<Status> read_status(pid_t pid);
Result<Status> read_task_status(pid_t pid, pid_t tid);  // /proc/PID/task/TID/status

// /proc/PID/fdinfo/FD.
struct FdInfo {
  uint64_t pos = 0;
  uint32_t flags = 0;  // octal "flags:" value, including O_CLOEXEC (02000000)
  int mnt_id = 0;
  uint64_t ino = 0;
};
Result<FdInfo> parse_fdinfo(std::string_view text);
Result<FdInfo> read_fdinfo(pid_t pid, int fd);

// Numeric entries of a /proc directory (task/, fd/), sorted ascending.
Result<std::vector<int>> list_numeric_dir(const std::string& path);
Result<std::vector<pid_t>> list_threads(pid_t pid);  // /proc/PID/task
Result<std::vector<int>> list_fds(pid_t pid);        // /proc/PID/fd
// Direct children of a process (/proc/PID/task/*/children).
Result<std::vector<pid_t>> list_children(pid_t pid);
// /proc/PID/stat of every process on the system, by ascending pid. Processes that exit while
// the table is read are left out.
Result<std::vector<Stat>> read_process_table();

// /proc/PID/auxv as (type, value) words, including the terminating AT_NULL pair.
Result<std::vector<uint64_t>> parse_auxv(std::string_view bytes);
Result<std::vector<uint64_t>> read_auxv(pid_t pid);

// /proc/PID/pagemap: one 64-bit entry per page of [start, end).
struct PagemapEntry {
  uint64_t raw = 0;
  bool present() const { return raw & (1ull << 63); }
  bool swapped() const { return raw & (1ull << 62); }
  bool file_or_shared_anon() const { return raw & (1ull << 61); }
  bool exclusive() const { return raw & (1ull << 56); }
};
class Pagemap {
 public:
  static Result<Pagemap> open(pid_t pid);
  // Fills out with one entry per page in [start, end) (page-aligned addresses; EINVAL
  // otherwise). out is replaced, not appended to. (::crkit::Status, not proc::Status.)
  ::crkit::Status read(uint64_t start, uint64_t end, std::vector<PagemapEntry>& out) const;
  // The ranges of [start, end) whose pages are present or swapped (with not_file: and are not
  // file pages, i.e. anonymous or copy-on-write copies), in address order, adjacent ranges
  // merged, from the PAGEMAP_SCAN ioctl (Linux 6.7): the kernel reports ranges, not one entry
  // per page, so a dense GiB costs a few ranges instead of 2 MiB of entries. std::nullopt when
  // the kernel has no PAGEMAP_SCAN (the caller then reads entries).
  Result<std::optional<std::vector<std::pair<uint64_t, uint64_t>>>> scan_populated(
      uint64_t start, uint64_t end, bool not_file) const;
  ~Pagemap();
  Pagemap(Pagemap&&) noexcept;
  Pagemap& operator=(Pagemap&&) noexcept;
  Pagemap(const Pagemap&) = delete;
  Pagemap& operator=(const Pagemap&) = delete;

 private:
  explicit Pagemap(int fd, pid_t pid) : fd_(fd), pid_(pid) {}
  int fd_ = -1;
  pid_t pid_ = 0;
};

// Text helpers shared by the parsers in node/proc/*.cpp; not part of the API.
namespace detail {
// Whole-string integer conversion (no sign for unsigned T, no "0x", no surrounding blanks).
template <class T>
std::optional<T> to_num(std::string_view s, int base = 10) {
  T v{};
  if (s.empty()) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}
std::string_view trim(std::string_view s);                      // strips ' ', '\t', '\n', '\r'
std::vector<std::string_view> split_ws(std::string_view s);     // on runs of blanks
std::vector<std::string_view> split_lines(std::string_view s);  // drops one trailing empty line
// EINVAL "parsing <file> line <n>: <why>" (line omitted when 0).
Error parse_error(std::string_view file, size_t line, std::string_view why);
}  // namespace detail

}  // namespace crkit::proc
