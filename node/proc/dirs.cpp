// Numeric /proc directories: processes, threads, fds, children.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include <fmt/format.h>

#include "proc/proc.hpp"

namespace crkit::proc {

namespace {

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Parses a /proc/PID/task/TID/children text: pids separated by spaces.
Result<std::vector<pid_t>> parse_children(std::string_view text, std::string_view file) {
  std::vector<pid_t> out;
  for (std::string_view w : detail::split_ws(text)) {
    auto p = detail::to_num<pid_t>(w);
    if (!p) return detail::parse_error(file, 0, fmt::format("bad pid \"{}\"", w));
    out.push_back(*p);
  }
  return out;
}

// Fallback when the kernel lacks CONFIG_PROC_CHILDREN: every process whose stat ppid is pid.
Result<std::vector<pid_t>> children_by_scan(pid_t pid) {
  CRKIT_ASSIGN(std::vector<int> all, list_numeric_dir("/proc"));
  std::vector<pid_t> out;
  for (int p : all) {
    auto st = read_stat(p);
    if (!st) {
      if (st.error().code == ESRCH) continue;  // exited while we scanned
      return st.error();
    }
    if (st->ppid == pid) out.push_back(p);
  }
  return out;
}

}  // namespace

Result<std::vector<int>> list_numeric_dir(const std::string& path) {
  std::unique_ptr<DIR, DirCloser> dir(::opendir(path.c_str()));  // O_CLOEXEC in glibc
  if (!dir) return proc_error(errno, "listing", path);
  std::vector<int> out;
  for (;;) {
    errno = 0;
    const struct dirent* de = ::readdir(dir.get());
    if (!de) {
      if (errno != 0) return proc_error(errno, "listing", path);
      break;
    }
    if (auto n = detail::to_num<int>(de->d_name)) out.push_back(*n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::vector<Stat>> read_process_table() {
  CRKIT_ASSIGN(std::vector<int> all, list_numeric_dir("/proc"));
  std::vector<Stat> out;
  out.reserve(all.size());
  for (int p : all) {
    auto st = read_stat(p);
    if (!st) {
      // Exited while we scanned, or hidden from us (/proc mounted with hidepid=).
      if (st.error().code == ESRCH || st.error().code == EACCES || st.error().code == EPERM)
        continue;
      return st.error();
    }
    out.push_back(std::move(*st));
  }
  return out;
}

Result<std::vector<pid_t>> list_threads(pid_t pid) {
  return list_numeric_dir(fmt::format("/proc/{}/task", pid));
}

Result<std::vector<int>> list_fds(pid_t pid) {
  return list_numeric_dir(fmt::format("/proc/{}/fd", pid));
}

Result<std::vector<pid_t>> list_children(pid_t pid) {
  CRKIT_ASSIGN(std::vector<pid_t> tids, list_threads(pid));
  std::vector<pid_t> out;
  for (pid_t tid : tids) {
    std::string task = fmt::format("/proc/{}/task/{}", pid, tid);
    std::string path = task + "/children";
    auto text = read_file(path);
    if (!text) {
      if (!exists(task)) {
        if (!exists(fmt::format("/proc/{}", pid))) return text.error();  // process is gone
        continue;                                                        // thread exited
      }
      if (text.error().code == ENOENT) {  // no CONFIG_PROC_CHILDREN
        CRKIT_ASSIGN(out, children_by_scan(pid));
        // The process may have exited during the scan; report it as for the other readers.
        if (!exists(fmt::format("/proc/{}", pid))) {
          return Error{ESRCH, fmt::format("listing children of process {}: process {} does "
                                          "not exist",
                                          pid, pid)};
        }
        break;
      }
      return text.error();
    }
    CRKIT_ASSIGN(std::vector<pid_t> kids, parse_children(*text, path));
    out.insert(out.end(), kids.begin(), kids.end());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace crkit::proc
