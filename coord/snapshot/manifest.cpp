// The global snapshot manifest: JSON codec, validation, atomic commit, image checksums, and
// the snapshot directories of a job.
#include "snapshot/manifest.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <ctime>
#include <limits>
#include <memory>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/cr_errors.hpp"
#include "common/unique_fd.hpp"

namespace crkit::coord {

namespace {

using nlohmann::json;

constexpr size_t kReadChunk = size_t{1} << 20;        // xxh64_file's read size
constexpr off_t kMaxManifestSize = off_t{256} << 20;  // a manifest is kilobytes; refuse junk
constexpr int kMaxTreeDepth = 32;                     // snapshot directories are shallow

Error field_error(const std::string& name, const std::string& field, const std::string& why) {
  return make_error(EINVAL, fmt::format("{}: {}: {}", name, field, why));
}

Error unsupported_format(const std::string& name, int format) {
  return make_error(kCrEVersion, fmt::format("{}: format: format {} is not supported (crkit {} "
                                             "reads format {})",
                                             name, format, CRKIT_VERSION, kManifestFormat));
}

// "a/b" + "c"; an absolute or empty dir is handled as given.
std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

std::string strip_trailing_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// ---------------------------------------------------------------------------------------------
// JSON decoding with field paths in the errors.

class Decoder {
 public:
  explicit Decoder(const std::string& name) : name_(name) {}

  Error bad(const std::string& field, const std::string& why) const {
    return field_error(name_, field, why);
  }
  Error wrong_type(const std::string& field, const char* expected, const json& j) const {
    return bad(field, fmt::format("expected {}, found {}", expected, j.type_name()));
  }

  // The member `key` of object j; nullptr when it is absent and optional.
  Result<const json*> member(const json& j, const char* key, bool required) const {
    auto it = j.find(key);
    if (it == j.end()) {
      if (required) return fail(bad(key, "missing"));
      return static_cast<const json*>(nullptr);
    }
    return &*it;
  }

  Result<int> to_int(const json& j, const std::string& field) const {
    if (!j.is_number_integer()) return fail(wrong_type(field, "an integer", j));
    if (j.is_number_unsigned()) {
      auto v = j.get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
        return fail(bad(field, fmt::format("{} is out of range", v)));
      }
      return static_cast<int>(v);
    }
    auto v = j.get<int64_t>();
    if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
      return fail(bad(field, fmt::format("{} is out of range", v)));
    }
    return static_cast<int>(v);
  }
  Result<uint64_t> to_u64(const json& j, const std::string& field) const {
    if (j.is_number_unsigned()) return j.get<uint64_t>();
    if (j.is_number_integer()) {
      return fail(bad(field, fmt::format("{} is negative", j.get<int64_t>())));
    }
    return fail(wrong_type(field, "an unsigned integer", j));
  }
  Result<std::string> to_string(const json& j, const std::string& field) const {
    if (!j.is_string()) return fail(wrong_type(field, "a string", j));
    return j.get<std::string>();
  }
  Result<bool> to_bool(const json& j, const std::string& field) const {
    if (!j.is_boolean()) return fail(wrong_type(field, "true or false", j));
    return j.get<bool>();
  }
  Result<double> to_double(const json& j, const std::string& field) const {
    if (!j.is_number()) return fail(wrong_type(field, "a number", j));
    return j.get<double>();
  }
  Result<std::vector<std::string>> to_strings(const json& j, const std::string& field) const {
    if (!j.is_array()) return fail(wrong_type(field, "an array of strings", j));
    std::vector<std::string> out;
    out.reserve(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
      CRKIT_ASSIGN(auto s, to_string(j[i], fmt::format("{}[{}]", field, i)));
      out.push_back(std::move(s));
    }
    return out;
  }

 private:
  const std::string& name_;
};

Result<ImageEntry> decode_image(const Decoder& d, const json& j, size_t index) {
  const std::string at = fmt::format("images[{}]", index);
  if (!j.is_object()) return fail(d.wrong_type(at, "an object", j));
  ImageEntry e;
  auto req = [&](const char* key) -> Result<const json*> {
    auto it = j.find(key);
    if (it == j.end()) return fail(d.bad(at + "." + key, "missing"));
    return &*it;
  };
  CRKIT_ASSIGN(const json* node, req("node"));
  CRKIT_ASSIGN(e.node, d.to_int(*node, at + ".node"));
  if (auto it = j.find("host"); it != j.end()) {
    CRKIT_ASSIGN(e.host, d.to_string(*it, at + ".host"));
  }
  CRKIT_ASSIGN(const json* ranks, req("ranks"));
  if (!ranks->is_array()) return fail(d.wrong_type(at + ".ranks", "an array of ranks", *ranks));
  for (size_t i = 0; i < ranks->size(); ++i) {
    CRKIT_ASSIGN(int r, d.to_int((*ranks)[i], fmt::format("{}.ranks[{}]", at, i)));
    e.ranks.push_back(r);
  }
  CRKIT_ASSIGN(const json* path, req("path"));
  CRKIT_ASSIGN(e.path, d.to_string(*path, at + ".path"));
  CRKIT_ASSIGN(const json* size, req("size"));
  CRKIT_ASSIGN(e.size, d.to_u64(*size, at + ".size"));
  CRKIT_ASSIGN(const json* hash, req("xxh64"));
  CRKIT_ASSIGN(e.xxh64, d.to_string(*hash, at + ".xxh64"));
  // Accept upper case (hand-edited or another tool's output); keep the canonical lower case.
  std::transform(e.xxh64.begin(), e.xxh64.end(), e.xxh64.begin(),
                 [](char c) { return (c >= 'A' && c <= 'F') ? static_cast<char>(c + 32) : c; });
  return e;
}

Result<Manifest> decode_manifest(const json& j, const std::string& name) {
  Decoder d(name);
  if (!j.is_object()) {
    return fail(EINVAL, fmt::format("{}: expected a JSON object, found {}", name, j.type_name()));
  }
  Manifest m;
  // The format first: what else is there depends on it.
  CRKIT_ASSIGN(const json* format, d.member(j, "format", true));
  CRKIT_ASSIGN(m.format, d.to_int(*format, "format"));
  if (m.format != kManifestFormat) {
    return fail(unsupported_format(name, m.format));
  }
  CRKIT_ASSIGN(const json* job, d.member(j, "job", false));
  if (job) {
    CRKIT_ASSIGN(m.job, d.to_string(*job, "job"));
  }
  CRKIT_ASSIGN(const json* seq, d.member(j, "seq", true));
  CRKIT_ASSIGN(m.seq, d.to_u64(*seq, "seq"));
  CRKIT_ASSIGN(const json* created, d.member(j, "created", false));
  if (created) {
    CRKIT_ASSIGN(m.created, d.to_string(*created, "created"));
  }
  CRKIT_ASSIGN(const json* nranks, d.member(j, "nranks", true));
  CRKIT_ASSIGN(m.nranks, d.to_int(*nranks, "nranks"));
  CRKIT_ASSIGN(const json* hosts, d.member(j, "hosts", true));
  CRKIT_ASSIGN(m.hosts, d.to_strings(*hosts, "hosts"));

  CRKIT_ASSIGN(const json* images, d.member(j, "images", true));
  if (!images->is_array()) return fail(d.wrong_type("images", "an array of images", *images));
  for (size_t i = 0; i < images->size(); ++i) {
    CRKIT_ASSIGN(auto e, decode_image(d, (*images)[i], i));
    m.images.push_back(std::move(e));
  }

  CRKIT_ASSIGN(const json* argv, d.member(j, "argv", false));
  if (argv) {
    CRKIT_ASSIGN(m.argv, d.to_strings(*argv, "argv"));
  }
  CRKIT_ASSIGN(const json* cwd, d.member(j, "cwd", false));
  if (cwd) {
    CRKIT_ASSIGN(m.cwd, d.to_string(*cwd, "cwd"));
  }
  CRKIT_ASSIGN(const json* env, d.member(j, "env", false));
  if (env) {
    if (!env->is_object()) return fail(d.wrong_type("env", "an object of strings", *env));
    for (auto it = env->begin(); it != env->end(); ++it) {
      CRKIT_ASSIGN(m.env[it.key()], d.to_string(it.value(), "env." + it.key()));
    }
  }
  CRKIT_ASSIGN(const json* mpi, d.member(j, "mpi", false));
  if (mpi) {
    CRKIT_ASSIGN(m.mpi, d.to_string(*mpi, "mpi"));
  }
  CRKIT_ASSIGN(const json* version, d.member(j, "crkit_version", false));
  if (version) {
    CRKIT_ASSIGN(m.crkit_version, d.to_string(*version, "crkit_version"));
  }
  CRKIT_ASSIGN(const json* nolocal, d.member(j, "nolocal", false));
  if (nolocal) {
    CRKIT_ASSIGN(m.nolocal, d.to_bool(*nolocal, "nolocal"));
  }
  CRKIT_ASSIGN(const json* timings, d.member(j, "timings_ms", false));
  if (timings) {
    if (!timings->is_object()) {
      return fail(d.wrong_type("timings_ms", "an object of numbers", *timings));
    }
    for (auto it = timings->begin(); it != timings->end(); ++it) {
      CRKIT_ASSIGN(m.timings_ms[it.key()], d.to_double(it.value(), "timings_ms." + it.key()));
    }
  }
  return m;
}

json encode_manifest(const Manifest& m) {
  json images = json::array();
  for (const auto& e : m.images) {
    images.push_back(json{{"node", e.node},
                          {"host", e.host},
                          {"ranks", e.ranks},
                          {"path", e.path},
                          {"size", e.size},
                          {"xxh64", e.xxh64}});
  }
  json timings = json::object();
  for (const auto& [k, v] : m.timings_ms) timings[k] = v;
  json j;  // an object keeps its keys sorted: the text is stable
  j["format"] = m.format;
  j["job"] = m.job;
  j["seq"] = m.seq;
  j["created"] = m.created;
  j["nranks"] = m.nranks;
  j["hosts"] = m.hosts;
  j["images"] = std::move(images);
  j["argv"] = m.argv;
  j["cwd"] = m.cwd;
  j["env"] = m.env;
  j["mpi"] = m.mpi;
  j["crkit_version"] = m.crkit_version;
  j["nolocal"] = m.nolocal;
  j["timings_ms"] = std::move(timings);
  return j;
}

// A relative path without "..": what an image path must be, so that the snapshot directory can
// move and a manifest cannot point outside it. Returns why not, or "".
std::string bad_relative_path(const std::string& p) {
  if (p.empty()) return "empty";
  if (p.find('\0') != std::string::npos) return "contains a NUL character";
  if (p.front() == '/') return "must be relative to the snapshot directory";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string::npos) end = p.size();
    if (std::string_view(p).substr(start, end - start) == "..") return "must not contain '..'";
    start = end + 1;
  }
  if (p == "." || p.back() == '/') return "must name a file";
  return "";
}

bool is_hex16(const std::string& s) {
  return s.size() == 16 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// write(2) all of data, retrying on EINTR and short writes.
Status write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno(fmt::format("writing {}", what));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Status fsync_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail_errno(fmt::format("opening directory {} to sync it", dir));
  if (::fsync(fd.get()) != 0) return fail_errno(fmt::format("syncing directory {}", dir));
  return {};
}

Result<std::string> read_small_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno(fmt::format("opening {}", path));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail_errno(fmt::format("examining {}", path));
  if (!S_ISREG(st.st_mode)) return fail(EINVAL, fmt::format("{}: not a regular file", path));
  if (st.st_size > kMaxManifestSize) {
    return fail(EFBIG, fmt::format("{}: {} bytes is too large for a manifest", path, st.st_size));
  }
  std::string out;
  out.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  for (;;) {
    if (got == out.size()) out.resize(out.size() + 4096);  // it grew since fstat
    ssize_t n = ::read(fd.get(), out.data() + got, out.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno(fmt::format("reading {}", path));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
    if (got > static_cast<size_t>(kMaxManifestSize)) {
      return fail(EFBIG, fmt::format("{}: too large for a manifest", path));
    }
  }
  out.resize(got);
  return out;
}

std::string rank_list(const std::vector<int>& ranks) {
  constexpr size_t kShown = 8;
  std::string s;
  for (size_t i = 0; i < ranks.size() && i < kShown; ++i) {
    s += (i ? "," : "") + std::to_string(ranks[i]);
  }
  if (ranks.size() > kShown) s += fmt::format(",... ({} ranks)", ranks.size());
  return s;
}

std::string describe_image(const ImageEntry& e) {
  return fmt::format("image {} (node {}{}{}, ranks {})", e.path, e.node, e.host.empty() ? "" : " ",
                     e.host, rank_list(e.ranks));
}

// ---------------------------------------------------------------------------------------------
// Removing snapshot directories: regular files and directories only, never through a symbolic
// link, nothing of another user (unless root). A tree is checked completely before anything in
// it is removed.

struct TreeRemover {
  bool root = ::geteuid() == 0;
  uid_t uid = ::geteuid();

  Status check_entry(const struct stat& st, const std::string& path) const {
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
      const char* kind = S_ISLNK(st.st_mode)    ? "a symbolic link"
                         : S_ISFIFO(st.st_mode) ? "a FIFO"
                         : S_ISSOCK(st.st_mode) ? "a socket"
                                                : "a device";
      return fail(EPERM, fmt::format("refusing to remove {}: it is {}, which crkit does not write",
                                     path, kind));
    }
    if (!root && st.st_uid != uid) {
      return fail(EPERM, fmt::format("refusing to remove {}: it belongs to uid {}, not to uid {}",
                                     path, st.st_uid, uid));
    }
    return {};
  }

  // Opens directory `name` of dirfd without following a symbolic link.
  static Result<UniqueFd> open_dir_at(int dirfd, const char* name, const std::string& path) {
    UniqueFd fd(::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return fail_errno(fmt::format("opening directory {}", path));
    return fd;
  }

  // The names in directory fd (without "." and "..").
  static Result<std::vector<std::string>> entries(int fd, const std::string& path) {
    int dup_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) return fail_errno(fmt::format("reading directory {}", path));
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(dup_fd), ::closedir);
    if (!dir) {
      int err = errno;
      ::close(dup_fd);
      return fail_sys(err, fmt::format("reading directory {}", path));
    }
    ::rewinddir(dir.get());  // the duplicate shares fd's offset: read from the start every time
    std::vector<std::string> names;
    for (;;) {
      errno = 0;
      struct dirent* de = ::readdir(dir.get());
      if (!de) {
        if (errno != 0) return fail_errno(fmt::format("reading directory {}", path));
        break;
      }
      std::string_view n = de->d_name;
      if (n == "." || n == "..") continue;
      names.emplace_back(n);
    }
    return names;
  }

  // Walks directory fd (path for messages); with remove, removes its contents as well.
  Status walk(int fd, const std::string& path, bool remove, int depth) const {
    if (depth > kMaxTreeDepth) {
      return fail(ELOOP, fmt::format("refusing to remove {}: nested more than {} directories deep",
                                     path, kMaxTreeDepth));
    }
    CRKIT_ASSIGN(auto names, entries(fd, path));
    for (const auto& n : names) {
      const std::string p = join_path(path, n);
      struct stat st {};
      if (::fstatat(fd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (remove && errno == ENOENT) continue;
        return fail_errno(fmt::format("examining {}", p));
      }
      CRKIT_TRY(check_entry(st, p));
      if (S_ISDIR(st.st_mode)) {
        CRKIT_ASSIGN(UniqueFd sub, open_dir_at(fd, n.c_str(), p));
        CRKIT_TRY(walk(sub.get(), p, remove, depth + 1));
        if (remove && ::unlinkat(fd, n.c_str(), AT_REMOVEDIR) != 0) {
          return fail_errno(fmt::format("removing directory {}", p));
        }
      } else if (remove && ::unlinkat(fd, n.c_str(), 0) != 0 && errno != ENOENT) {
        return fail_errno(fmt::format("removing {}", p));
      }
    }
    return {};
  }

  // Removes directory `dir` and everything in it. With uncommit, its manifest.json goes first,
  // so that an interrupted removal leaves a partial snapshot, never a committed broken one.
  Status remove_tree(const std::string& dir, bool uncommit) const {
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) return fail_errno(fmt::format("examining {}", dir));
    if (!S_ISDIR(st.st_mode)) {
      CRKIT_TRY(check_entry(st, dir));  // names what it is
      return fail(ENOTDIR, fmt::format("refusing to remove {}: not a directory", dir));
    }
    CRKIT_TRY(check_entry(st, dir));
    CRKIT_ASSIGN(UniqueFd fd, open_dir_at(AT_FDCWD, dir.c_str(), dir));
    CRKIT_TRY(walk(fd.get(), dir, /*remove=*/false, 0));
    if (uncommit && ::unlinkat(fd.get(), kManifestName, 0) != 0 && errno != ENOENT) {
      return fail_errno(fmt::format("removing {}", join_path(dir, kManifestName)));
    }
    CRKIT_TRY(walk(fd.get(), dir, /*remove=*/true, 0));
    if (::rmdir(dir.c_str()) != 0) return fail_errno(fmt::format("removing directory {}", dir));
    return {};
  }
};

// seq of a directory name that is exactly snapshot_dir_name(seq), or nothing.
bool parse_snapshot_name(std::string_view name, uint64_t* seq) {
  constexpr std::string_view kPrefix = "snap-";
  if (name.substr(0, kPrefix.size()) != kPrefix) return false;
  std::string_view digits = name.substr(kPrefix.size());
  if (digits.empty() ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc() || ptr != digits.data() + digits.size()) return false;
  if (snapshot_dir_name(v) != name) return false;  // "snap-0000003" is not ours
  *seq = v;
  return true;
}

}  // namespace

std::string iso8601_utc_now() {
  std::time_t t = std::time(nullptr);
  struct tm tm {};
  ::gmtime_r(&t, &tm);
  char buf[32];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

Status validate_manifest(const Manifest& m, const std::string& name) {
  if (m.format != kManifestFormat) {
    return fail(unsupported_format(name, m.format));
  }
  if (m.nranks <= 0) {
    return fail(field_error(name, "nranks", fmt::format("{} is not a positive count", m.nranks)));
  }
  if (m.images.empty()) return fail(field_error(name, "images", "no images"));
  // Which image holds each rank (-1: none yet).
  std::vector<int> owner(static_cast<size_t>(m.nranks), -1);
  std::map<int, size_t> nodes;
  std::map<std::string, size_t> paths;
  for (size_t i = 0; i < m.images.size(); ++i) {
    const ImageEntry& e = m.images[i];
    const std::string at = fmt::format("images[{}]", i);
    if (e.node < 0) {
      return fail(field_error(name, at + ".node", fmt::format("{} is negative", e.node)));
    }
    if (auto [it, fresh] = nodes.emplace(e.node, i); !fresh) {
      return fail(field_error(
          name, at + ".node",
          fmt::format("node {} already has an image (images[{}])", e.node, it->second)));
    }
    if (!m.hosts.empty()) {
      if (static_cast<size_t>(e.node) >= m.hosts.size()) {
        return fail(field_error(
            name, at + ".node",
            fmt::format("node {} is not in hosts ({} hosts listed)", e.node, m.hosts.size())));
      }
      if (!e.host.empty() && e.host != m.hosts[static_cast<size_t>(e.node)]) {
        return fail(field_error(name, at + ".host",
                                fmt::format("'{}' differs from hosts[{}] '{}'", e.host, e.node,
                                            m.hosts[static_cast<size_t>(e.node)])));
      }
    }
    if (e.ranks.empty()) return fail(field_error(name, at + ".ranks", "no ranks"));
    for (size_t k = 0; k < e.ranks.size(); ++k) {
      const int r = e.ranks[k];
      const std::string rat = fmt::format("{}.ranks[{}]", at, k);
      if (r < 0 || r >= m.nranks) {
        return fail(field_error(
            name, rat,
            fmt::format("rank {} is out of range 0..{} (nranks {})", r, m.nranks - 1, m.nranks)));
      }
      int& o = owner[static_cast<size_t>(r)];
      if (o >= 0) {
        return fail(
            field_error(name, rat,
                        fmt::format("rank {} appears twice (also in images[{}]{})", r, o,
                                    static_cast<size_t>(o) == i ? ", the same image" : "")));
      }
      o = static_cast<int>(i);
    }
    if (std::string why = bad_relative_path(e.path); !why.empty()) {
      return fail(field_error(name, at + ".path", fmt::format("'{}': {}", e.path, why)));
    }
    if (auto [it, fresh] = paths.emplace(e.path, i); !fresh) {
      return fail(
          field_error(name, at + ".path",
                      fmt::format("'{}' is also the path of images[{}]", e.path, it->second)));
    }
    if (!is_hex16(e.xxh64)) {
      return fail(
          field_error(name, at + ".xxh64", fmt::format("'{}' is not 16 hex digits", e.xxh64)));
    }
  }
  for (const auto& [key, ms] : m.timings_ms) {
    // JSON has no NaN or infinity (they would come back as null).
    if (!std::isfinite(ms)) {
      return fail(field_error(name, "timings_ms." + key, fmt::format("{} is not finite", ms)));
    }
  }
  for (int r = 0; r < m.nranks; ++r) {
    if (owner[static_cast<size_t>(r)] < 0) {
      return fail(field_error(name, "images",
                              fmt::format("rank {} is in no image (nranks {})", r, m.nranks)));
    }
  }
  return {};
}

Result<std::string> to_json(const Manifest& m) {
  try {
    return encode_manifest(m).dump(2) + "\n";
  } catch (const json::exception& e) {
    return fail(EINVAL, fmt::format("manifest of job '{}' snapshot {}: cannot encode as JSON: {}",
                                    m.job, m.seq, e.what()));
  }
}

Result<Manifest> parse_manifest(std::string_view text, const std::string& name) {
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 2: ..."
    std::string what = e.what();
    if (auto pos = what.find("] "); what.starts_with("[json.") && pos != std::string::npos) {
      what.erase(0, pos + 2);
    }
    return fail(EINVAL, fmt::format("{}: invalid JSON: {}", name, what));
  }
  CRKIT_ASSIGN(Manifest m, decode_manifest(j, name));
  CRKIT_TRY(validate_manifest(m, name));
  return m;
}

Status write_manifest_atomic(const std::string& dir, const Manifest& m) {
  const std::string final_path = join_path(dir, kManifestName);
  const std::string tmp_path = join_path(dir, kManifestTempName);
  CRKIT_TRY(validate_manifest(m, final_path));
  CRKIT_ASSIGN(std::string text, to_json(m));

  UniqueFd fd(::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) {
    if (errno == EEXIST) {
      return fail(EEXIST, fmt::format("creating {}: it exists (another commit of this snapshot "
                                      "is running, or one was interrupted; the snapshot is "
                                      "not committed)",
                                      tmp_path));
    }
    return fail_errno(fmt::format("creating {}", tmp_path));
  }
  auto cleanup = [&](Error e) {
    fd.reset();
    ::unlink(tmp_path.c_str());
    return fail(std::move(e));
  };
  if (auto st = write_all(fd.get(), text, tmp_path); !st) return cleanup(st.error());
  if (::fsync(fd.get()) != 0) return cleanup(errno_error(fmt::format("syncing {}", tmp_path)));
  if (::close(fd.release()) != 0) {
    return cleanup(errno_error(fmt::format("closing {}", tmp_path)));
  }
  if (::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
    return cleanup(errno_error(fmt::format("renaming {} to {}", tmp_path, final_path)));
  }
  // The rename is durable only once the directory is: until then the snapshot may vanish in a
  // crash, which is the same as not committed; report it, as the commit is not guaranteed.
  CRKIT_TRY(fsync_dir(dir.empty() ? "." : dir));
  return {};
}

Result<Manifest> read_manifest(const std::string& dir_or_file) {
  std::string dir, file;
  struct stat st {};
  if (::stat(dir_or_file.c_str(), &st) != 0) {
    return fail_errno(fmt::format("reading snapshot manifest {}", dir_or_file));
  }
  if (S_ISDIR(st.st_mode)) {
    dir = strip_trailing_slashes(dir_or_file);
    file = join_path(dir, kManifestName);
  } else {
    file = dir_or_file;
    auto slash = file.rfind('/');
    dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : file.substr(0, slash));
  }
  CRKIT_ASSIGN(std::string text, read_small_file(file));
  CRKIT_ASSIGN(Manifest m, parse_manifest(text, file));
  for (size_t i = 0; i < m.images.size(); ++i) {
    const ImageEntry& e = m.images[i];
    const std::string field = fmt::format("images[{}].path", i);
    const std::string path = join_path(dir, e.path);
    struct stat ist {};
    if (::stat(path.c_str(), &ist) != 0) {
      return fail(sys_error(errno, fmt::format("{}: {}: image {}", file, field, path)));
    }
    if (!S_ISREG(ist.st_mode)) {
      return fail(EINVAL, fmt::format("{}: {}: image {} is not a regular file", file, field, path));
    }
    if (static_cast<uint64_t>(ist.st_size) != e.size) {
      return fail(EIO, fmt::format("{}: images[{}].size: image {} has {} bytes, the manifest "
                                   "records {} (truncated or replaced)",
                                   file, i, path, ist.st_size, e.size));
    }
  }
  return m;
}

Result<std::string> xxh64_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno(fmt::format("opening {}", path));
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  std::unique_ptr<XXH64_state_t, XXH_errorcode (*)(XXH64_state_t*)> state(XXH64_createState(),
                                                                          XXH64_freeState);
  if (!state || XXH64_reset(state.get(), 0) != XXH_OK) {
    return fail(ENOMEM, fmt::format("hashing {}: cannot set up an XXH64 state", path));
  }
  std::unique_ptr<char[]> buf(new char[kReadChunk]);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.get(), kReadChunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno(fmt::format("reading {}", path));
    }
    if (n == 0) break;
    if (XXH64_update(state.get(), buf.get(), static_cast<size_t>(n)) != XXH_OK) {
      return fail(EIO, fmt::format("hashing {}: XXH64_update failed", path));
    }
  }
  return fmt::format("{:016x}", static_cast<unsigned long long>(XXH64_digest(state.get())));
}

Status verify_images(const std::string& dir, const Manifest& m) {
  for (const auto& e : m.images) {
    const std::string path = join_path(dir, e.path);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      return fail_errno(fmt::format("verifying {}: {}", describe_image(e), path));
    }
    if (static_cast<uint64_t>(st.st_size) != e.size) {
      return fail(EIO, fmt::format("verifying {}: {} has {} bytes, the manifest records {}",
                                   describe_image(e), path, st.st_size, e.size));
    }
  }
  for (const auto& e : m.images) {
    const std::string path = join_path(dir, e.path);
    auto hash = xxh64_file(path);
    if (!hash) return fail(hash.error().context(fmt::format("verifying {}", describe_image(e))));
    if (*hash != e.xxh64) {
      return fail(EIO, fmt::format("verifying {}: {} has xxh64 {}, the manifest records {} "
                                   "(the image is corrupted)",
                                   describe_image(e), path, *hash, e.xxh64));
    }
  }
  return {};
}

std::string snapshot_dir_name(uint64_t seq) {
  return fmt::format("snap-{:06}", seq);
}

Result<std::vector<uint64_t>> list_snapshots(const std::string& job_dir) {
  UniqueFd fd(::open(job_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail_errno(fmt::format("listing the snapshots in {}", job_dir));
  CRKIT_ASSIGN(auto names, TreeRemover::entries(fd.get(), job_dir));
  std::vector<uint64_t> seqs;
  for (const auto& n : names) {
    uint64_t seq = 0;
    if (!parse_snapshot_name(n, &seq)) continue;
    struct stat st {};
    if (::fstatat(fd.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) {
      continue;
    }
    UniqueFd sub(::openat(fd.get(), n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) continue;
    struct stat mst {};
    if (::fstatat(sub.get(), kManifestName, &mst, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(mst.st_mode)) {
      continue;  // partial: not committed
    }
    seqs.push_back(seq);
  }
  std::sort(seqs.begin(), seqs.end());
  return seqs;
}

Status prune_snapshots(const std::string& job_dir, size_t keep) {
  CRKIT_ASSIGN(auto seqs, list_snapshots(job_dir));
  if (seqs.size() <= keep) return {};
  const TreeRemover remover;
  const size_t drop = seqs.size() - keep;
  for (size_t i = 0; i < drop; ++i) {
    const std::string dir = join_path(job_dir, snapshot_dir_name(seqs[i]));
    if (auto st = remover.remove_tree(dir, /*uncommit=*/true); !st) {
      return fail(st.error().context(fmt::format(
          "pruning snapshot {} of {} (keeping the newest {})", seqs[i], job_dir, keep)));
    }
  }
  return {};
}

Status remove_partial(const std::string& snap_dir_arg) {
  const std::string snap_dir = strip_trailing_slashes(snap_dir_arg);
  struct stat st {};
  if (::lstat(snap_dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return fail_errno(fmt::format("removing partial snapshot {}", snap_dir));
  }
  if (S_ISDIR(st.st_mode)) {
    const std::string manifest = join_path(snap_dir, kManifestName);
    struct stat mst {};
    if (::lstat(manifest.c_str(), &mst) == 0) {
      return fail(EEXIST, fmt::format("refusing to remove {}: it is a committed snapshot (it has "
                                      "{})",
                                      snap_dir, kManifestName));
    }
  }
  const TreeRemover remover;
  if (auto r = remover.remove_tree(snap_dir, /*uncommit=*/false); !r) {
    return fail(r.error().context(fmt::format("removing partial snapshot {}", snap_dir)));
  }
  return {};
}

}  // namespace crkit::coord
