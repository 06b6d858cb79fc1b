#include "protocol/token.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include <fmt/format.h>

#include "common/unique_fd.hpp"

namespace crkit::coord {

Result<std::string> new_token() {
  unsigned char raw[32];
  size_t got = 0;
  while (got < sizeof raw) {
    ssize_t n = ::getrandom(raw + got, sizeof raw - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("getrandom for a coordinator token");
    got += static_cast<size_t>(n);
  }
  std::string t;
  for (unsigned char c : raw) t += fmt::format("{:02x}", c);
  return t;
}

bool token_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

Status check_token(std::string_view t, std::string_view source) {
  if (t.size() < 16 || t.size() > 256)
    return fail(EINVAL,
                fmt::format("{}: a token has 16 to 256 characters, this one {}", source, t.size()));
  for (char c : t)
    if (c <= ' ' || c > '~')
      return fail(EINVAL,
                  fmt::format("{}: a token is printable characters without spaces", source));
  return {};
}

namespace {

std::string first_line(std::string s) {
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  if (!s.empty() && s.back() == '\r') s.pop_back();
  return s;
}

}  // namespace

Result<std::string> read_token_file(const std::string& path, bool create) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd && errno == ENOENT && create) {
    CRKIT_ASSIGN(std::string t, new_token());
    UniqueFd w(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!w) return fail_errno(fmt::format("creating the token file {}", path));
    const std::string text = t + "\n";
    if (::write(w.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
        ::fsync(w.get()) != 0)
      return fail_errno(fmt::format("writing the token file {}", path));
    return t;
  }
  if (!fd) return fail_errno(fmt::format("opening the token file {}", path));
  struct stat sb {};
  if (::fstat(fd.get(), &sb) != 0) return fail_errno(fmt::format("stat of {}", path));
  if (!S_ISREG(sb.st_mode))
    return fail(EACCES, fmt::format("the token file {} is not a regular file", path));
  if (sb.st_uid != ::geteuid())
    return fail(EACCES, fmt::format("the token file {} belongs to uid {}, not to us ({})", path,
                                    sb.st_uid, ::geteuid()));
  if (sb.st_mode & 077)
    return fail(EACCES, fmt::format("the token file {} can be read or written by others (mode "
                                    "{:04o}; chmod 600 it)",
                                    path, sb.st_mode & 07777));
  char buf[512];
  ssize_t n;
  do n = ::read(fd.get(), buf, sizeof buf);
  while (n < 0 && errno == EINTR);
  if (n < 0) return fail_errno(fmt::format("reading the token file {}", path));
  std::string t = first_line(std::string(buf, static_cast<size_t>(n)));
  CRKIT_TRY(check_token(t, "the token file " + path));
  return t;
}

Result<std::string> client_token(const std::string& token_file, const std::string& coord) {
  if (!token_file.empty()) return read_token_file(token_file, false);
  const char* env = std::getenv("CRKIT_COORD_TOKEN");
  if (!env || !*env)
    return fail(EINVAL, fmt::format("the coordinator at {} needs its token: give --token-file "
                                    "FILE (as given to cr_coordd) or set CRKIT_COORD_TOKEN",
                                    coord));
  std::string t = env;
  ::unsetenv("CRKIT_COORD_TOKEN");
  CRKIT_TRY(check_token(t, "$CRKIT_COORD_TOKEN"));
  return t;
}

Result<std::string> read_token_line(int fd, int timeout_ms, std::string_view source) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string s;
  while (s.find('\n') == std::string::npos && s.size() <= 256) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0)
      return fail(ETIMEDOUT, fmt::format("{}: no token within {} s", source, timeout_ms / 1000));
    struct pollfd p {
      fd, POLLIN, 0
    };
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return fail_errno(fmt::format("{}: waiting for the token", source));
    if (r == 0) continue;
    char buf[128];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno(fmt::format("{}: reading the token", source));
    if (n == 0) {
      if (s.empty())
        return fail(EINVAL, fmt::format("{}: stdin ended before a token came (does the "
                                        "launcher pass stdin on, e.g. not ssh -n?)",
                                        source));
      break;
    }
    s.append(buf, static_cast<size_t>(n));
  }
  std::string t = first_line(s);
  CRKIT_TRY(check_token(t, source));
  return t;
}

}  // namespace crkit::coord
