// Whole-file and symlink reads with /proc-aware errors.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "common/unique_fd.hpp"
#include "proc/proc.hpp"

namespace crkit::proc {

namespace {

// Leading decimal component of s followed by '/' or the end; advances s past it.
std::optional<pid_t> take_pid(std::string_view& s) {
  size_t n = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
  if (n == 0 || (n < s.size() && s[n] != '/')) return std::nullopt;
  auto v = detail::to_num<pid_t>(s.substr(0, n));
  if (v) s.remove_prefix(n);
  return v;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

Error proc_error(int err, std::string_view op, const std::string& path) {
  std::string what = fmt::format("{} {}", op, path);
  if (err != ENOENT && err != ESRCH) return sys_error(err, what);
  std::string_view rest = path;
  constexpr std::string_view kProc = "/proc/";
  if (rest.substr(0, kProc.size()) != kProc) return sys_error(err, what);
  rest.remove_prefix(kProc.size());
  auto pid = take_pid(rest);
  if (!pid) return sys_error(err, what);
  if (!exists(fmt::format("/proc/{}", *pid))) {
    return Error{ESRCH, fmt::format("{}: process {} does not exist", what, *pid)};
  }
  constexpr std::string_view kTask = "/task/";
  if (rest.substr(0, kTask.size()) == kTask) {
    rest.remove_prefix(kTask.size());
    auto tid = take_pid(rest);
    if (tid && !exists(fmt::format("/proc/{}/task/{}", *pid, *tid))) {
      return Error{ESRCH,
                   fmt::format("{}: thread {} of process {} does not exist", what, *tid, *pid)};
    }
  }
  return sys_error(err, what);
}

Result<std::string> read_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return proc_error(errno, "reading", path);
  // /proc files report st_size 0, so read until EOF.
  std::string out;
  size_t len = 0;
  for (;;) {
    if (out.size() - len < 4096) out.resize(out.size() < 4096 ? 8192 : out.size() * 2);
    ssize_t n = ::read(fd.get(), out.data() + len, out.size() - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return proc_error(errno, "reading", path);
    }
    if (n == 0) break;
    len += static_cast<size_t>(n);
  }
  out.resize(len);
  return out;
}

Result<std::string> read_link(const std::string& path) {
  std::string buf(256, '\0');
  for (;;) {
    ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
    if (n < 0) return proc_error(errno, "reading symlink", path);
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    buf.resize(buf.size() * 2);  // possibly truncated: retry with a bigger buffer
  }
}

}  // namespace crkit::proc
