#include "resources/files.hpp"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <linux/memfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include <fmt/format.h>

#include "common/log.hpp"
#include "proc/proc.hpp"
#include "resources/pipes.hpp"
#include "resources/process.hpp"

namespace crkit::resources {
namespace {

constexpr uint32_t kCloexec = 02000000;
constexpr uint32_t kTmpfileOnly = 020000000;  // __O_TMPFILE without O_DIRECTORY

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::string strip_deleted(std::string s) {
  if (ends_with(s, " (deleted)")) s.resize(s.size() - 10);
  return s;
}

bool is_tty_device(dev_t rdev) {
  unsigned maj = major(rdev), min = minor(rdev);
  return maj == 4 || (maj >= 136 && maj <= 143) || (maj == 5 && (min == 0 || min == 1));
}

// The record of one descriptor, or nothing when it was closed meanwhile or is one of the
// image being written (skip_file).
Result<std::optional<image::FdRecord>> describe_fd(
    pid_t pid, int fd, FilesDump& out, uint32_t* next_content,
    const std::optional<image::FileIdentity>& skip_file) {
  std::string link_path = fmt::format("/proc/{}/fd/{}", pid, fd);
  auto link = proc::read_link(link_path);
  if (!link) return std::optional<image::FdRecord>();
  CRKIT_ASSIGN(proc::FdInfo info, proc::read_fdinfo(pid, fd));
  image::FdRecord r;
  r.pid = pid;
  r.fd = fd;
  r.flags = info.flags & ~kCloexec;
  r.cloexec = (info.flags & kCloexec) ? 1 : 0;
  r.pos = info.pos;
  r.path = *link;
  auto unsupported = [&](const std::string& kind) {
    return fail(EBADF,
                fmt::format("process {}: fd {} ({}) cannot be checkpointed: {} is not supported",
                            pid, fd, *link, kind));
  };
  if (link->rfind("anon_inode:", 0) == 0) {
    std::string kind = link->substr(11);
    kind.erase(
        std::remove_if(kind.begin(), kind.end(), [](char c) { return c == '[' || c == ']'; }),
        kind.end());
    return unsupported(kind.empty() ? "an anonymous-inode file" : kind);
  }
  struct stat st {};
  if (::stat(link_path.c_str(), &st) < 0)
    return fail_errno(fmt::format("examining fd {} of process {}", fd, pid));
  r.id = file_identity(st);
  if (skip_file && r.id.dev == skip_file->dev && r.id.ino == skip_file->ino) {
    log::info("process {}: fd {} is the image being written: not saved", pid, fd);
    return std::optional<image::FdRecord>();
  }
  if (info.flags & O_PATH) return unsupported("an O_PATH descriptor");
  r.size_at_checkpoint = static_cast<uint64_t>(st.st_size);
  if (S_ISREG(st.st_mode)) {
    if (ends_with(*link, " (deleted)") || st.st_nlink == 0) {
      r.kind = image::FdKind::Unlinked;
      r.path = strip_deleted(r.path);
      r.content_id = (*next_content)++;
      out.content_sources[r.content_id] = link_path;
    } else {
      r.kind = image::FdKind::Regular;
    }
  } else if (S_ISDIR(st.st_mode)) {
    r.kind = image::FdKind::Directory;
  } else if (S_ISCHR(st.st_mode)) {
    if (is_tty_device(st.st_rdev)) {
      r.kind = image::FdKind::Tty;
    } else if (major(st.st_rdev) == 1) {
      r.kind = image::FdKind::CharDevice;
    } else {
      return unsupported(
          fmt::format("character device {}:{}", major(st.st_rdev), minor(st.st_rdev)));
    }
  } else if (S_ISFIFO(st.st_mode)) {
    if (link->rfind("pipe:", 0) == 0) {
      r.kind = image::FdKind::ExternalPipe;  // classify_pipes() decides
    } else {
      r.kind = image::FdKind::Fifo;
      if (ends_with(*link, " (deleted)") || st.st_nlink == 0) r.attrs |= image::kFdAttrUnlinked;
      r.path = strip_deleted(r.path);
    }
  } else if (S_ISSOCK(st.st_mode)) {
    r.kind = image::FdKind::Socket;
    log::warn(
        "process {}: fd {} ({}) is a socket; it is not saved and will be closed after restart", pid,
        fd, *link);
  } else {
    return unsupported(S_ISBLK(st.st_mode) ? "a block device" : "this file type");
  }
  return std::optional<image::FdRecord>(std::move(r));
}

// Descriptors that refer to one open file description (dup, inheritance) get the same
// file_id; kcmp(KCMP_FILE) tells, comparing only descriptors of the same inode (in any of the
// processes).
void assign_file_ids(std::vector<image::FdRecord>& fds) {
  uint32_t next = 1;
  std::map<std::pair<uint64_t, uint64_t>, std::vector<size_t>> by_inode;
  for (size_t i = 0; i < fds.size(); ++i) {
    auto& r = fds[i];
    if (r.kind == image::FdKind::Socket) continue;
    auto& same = by_inode[{r.id.dev, r.id.ino}];
    for (size_t j : same)
      if (::syscall(SYS_kcmp, fds[j].pid, r.pid, KCMP_FILE, fds[j].fd, r.fd) == 0) {
        r.file_id = fds[j].file_id;
        break;
      }
    if (!r.file_id) r.file_id = next++;
    same.push_back(i);
  }
}

}  // namespace

Result<FilesDump> dump_files(std::span<const pid_t> pids, const SkipFds& skip) {
  FilesDump out;
  uint32_t next_content = 1;
  for (pid_t pid : pids) {
    CRKIT_ASSIGN(auto fds, proc::list_fds(pid));
    auto own = skip.by_pid.find(pid);
    for (int fd : fds) {
      if (own != skip.by_pid.end() && own->second.count(fd)) continue;
      CRKIT_ASSIGN(auto r, describe_fd(pid, fd, out, &next_content, skip.image_file));
      if (r) out.fds.push_back(std::move(*r));
    }
  }
  assign_file_ids(out.fds);
  CRKIT_TRY(classify_pipes(out, &next_content));
  return out;
}

Status write_file_contents(const FilesDump& files, image::ImageWriter& w) {
  for (const auto& [id, data] : files.pipe_data) {
    image::FileContentHeader h;
    h.content_id = id;
    h.total_size = data.size();
    auto packets = files.pipe_packets.find(id);
    if (packets == files.pipe_packets.end()) {
      CRKIT_TRY(w.write_file_content(h, data));
      continue;
    }
    for (uint64_t len : packets->second) {  // one record per packet
      CRKIT_TRY(w.write_file_content(h, std::span<const uint8_t>(data).subspan(h.offset, len)));
      h.offset += len;
    }
  }
  std::vector<uint8_t> buf(1 << 20);
  for (const auto& [id, src] : files.content_sources) {
    UniqueFd fd(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return fail_errno(fmt::format("reading the content of unlinked file {}", src));
    struct stat st {};
    ::fstat(fd.get(), &st);
    image::FileContentHeader h;
    h.content_id = id;
    h.total_size = static_cast<uint64_t>(st.st_size);
    uint64_t off = 0;
    for (;;) {
      ssize_t n = ::pread(fd.get(), buf.data(), buf.size(), static_cast<off_t>(off));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail_errno(fmt::format("reading the content of unlinked file {}", src));
      if (n == 0) break;
      h.offset = off;
      CRKIT_TRY(
          w.write_file_content(h, std::span<const uint8_t>(buf.data(), static_cast<size_t>(n))));
      off += static_cast<uint64_t>(n);
    }
    if (off == 0) {
      h.offset = 0;
      CRKIT_TRY(w.write_file_content(h, {}));
    }
  }
  return {};
}

namespace {

// Flags that only mean something to open() itself are not re-applied.
uint32_t reopen_flags(const image::FdRecord& r) {
  return r.flags & ~static_cast<uint32_t>(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | kTmpfileOnly |
                                          (r.kind == image::FdKind::Directory ? 0 : O_DIRECTORY));
}

std::string describe(const image::FdRecord& r) {
  return fmt::format("restoring fd {} of process {} ({} {})", r.fd, r.pid,
                     image::fd_kind_name(r.kind), r.path);
}

// Opens path without blocking (O_NONBLOCK, O_NOCTTY), checks that it is still of the type
// it was (S_IFREG, S_IFCHR), then gives it the saved O_NONBLOCK flag.
Result<UniqueFd> open_as_before(const std::string& path, uint32_t flags, mode_t type,
                                const std::string& what) {
  UniqueFd fd(::open(path.c_str(), static_cast<int>(flags) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd) return fail_errno(fmt::format("{}: cannot reopen {}", what, path));
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) return fail_errno(fmt::format("{}: examining {}", what, path));
  if ((st.st_mode & S_IFMT) != type)
    return fail(ESTALE, fmt::format("{}: {} is no longer a {}", what, path,
                                    type == S_IFREG ? "regular file" : "character device"));
  if (!(flags & O_NONBLOCK)) {
    int fl = ::fcntl(fd.get(), F_GETFL);
    if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK) < 0)
      return fail_errno(fmt::format("{}: restoring the flags of {}", what, path));
  }
  return fd;
}

// Opens what record r describes (kinds opened by path or duplicated from cr_restart).
Result<UniqueFd> open_for_record(const image::FdRecord& r, const RestoreTarget& t) {
  const uint32_t open_flags = reopen_flags(r);
  const std::string what = describe(r);
  switch (r.kind) {
    case image::FdKind::Regular: {
      std::string path = t.relocate(r.path);
      // The saved path is canonical: a symlink in its place now is not the same file.
      // Non-blocking, so that a FIFO or device put in its place cannot hang the restart.
      CRKIT_ASSIGN(UniqueFd fd, open_as_before(path, open_flags | O_NOFOLLOW, S_IFREG, what));
      if (::lseek(fd.get(), static_cast<off_t>(r.pos), SEEK_SET) < 0)
        return fail_errno(fmt::format("{}: seeking {} to offset {}", what, path, r.pos));
      return fd;
    }
    case image::FdKind::Directory: {
      std::string path = t.relocate(r.path);
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!fd) return fail_errno(fmt::format("{}: cannot reopen directory {}", what, path));
      if (r.pos) ::lseek(fd.get(), static_cast<off_t>(r.pos), SEEK_SET);
      return fd;
    }
    case image::FdKind::CharDevice: {
      // Only memory devices (major 1) are saved; anything else in their place is refused.
      CRKIT_ASSIGN(UniqueFd fd, open_as_before(r.path, open_flags, S_IFCHR, what));
      struct stat st {};
      if (::fstat(fd.get(), &st) < 0 || major(st.st_rdev) != 1)
        return fail(ESTALE, fmt::format("{}: {} is no longer a memory device", what, r.path));
      return fd;
    }
    case image::FdKind::Tty: {
      if (t.isolate_terminal) {
        log::warn(
            "process {}: fd {} was the terminal {}; another user's process gets no "
            "terminal of root's: it now refers to /dev/null",
            r.pid, r.fd, r.path);
        UniqueFd fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
        if (!fd) return fail_errno(what);
        return fd;
      }
      // The restarter's terminal takes the place of the original one.
      for (int s : {0, 1, 2})
        if (::isatty(s)) {
          int fd = ::fcntl(s, F_DUPFD_CLOEXEC, 0);
          if (fd >= 0) return UniqueFd(fd);
        }
      UniqueFd fd(::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY));
      if (!fd) {
        log::warn(
            "process {}: fd {} was the terminal {}; cr_restart has no terminal, so it now refers "
            "to /dev/null",
            r.pid, r.fd, r.path);
        fd.reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
      }
      if (!fd) return fail_errno(what);
      return fd;
    }
    case image::FdKind::ExternalPipe: {
      // BLCR semantics: pipe ends leading outside the checkpoint become cr_restart's
      // stdin (read end) or stdout (write end).
      int src = (r.flags & O_ACCMODE) == O_RDONLY ? 0 : 1;
      if (t.isolate_terminal && ::isatty(src)) {
        log::warn(
            "process {}: fd {} led outside the image; cr_restart's {} is a terminal, which "
            "another user's process does not get: it now refers to /dev/null",
            r.pid, r.fd, src ? "stdout" : "stdin");
        UniqueFd fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
        if (!fd) return fail_errno(what);
        return fd;
      }
      int fd = ::fcntl(src, F_DUPFD_CLOEXEC, 0);
      if (fd < 0)
        return fail_errno(
            fmt::format("{}: duplicating cr_restart's {}", what, src ? "stdout" : "stdin"));
      return UniqueFd(fd);
    }
    case image::FdKind::Unlinked:  // opened from their inode (open_files)
    case image::FdKind::Socket:
    case image::FdKind::Pipe:
    case image::FdKind::Fifo:
      break;
  }
  return UniqueFd();
}

// An unlinked file's inode, recreated with its saved content once per inode: an O_TMPFILE
// file in its old directory (or /tmp), or the shared-memory object it is (an open memfd).
Result<int> unlinked_inode(const image::FdRecord& r, const FileContents& contents,
                           const RestoreTarget& t, const OpenFiles& files,
                           std::map<ShmKey, int>& made, std::vector<UniqueFd>& owned) {
  const ShmKey key{r.id.dev, r.id.ino};
  if (auto it = made.find(key); it != made.end()) return it->second;
  const std::string what = describe(r);
  int fd = -1;
  if (auto it = files.shared_memory.find(key); it != files.shared_memory.end()) {
    fd = it->second.get();
  } else if (r.path.rfind("/memfd:", 0) == 0) {  // an open memfd, mapped by nobody
    UniqueFd m(static_cast<int>(
        ::syscall(SYS_memfd_create, r.path.substr(7).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING)));
    if (!m) return fail_errno(fmt::format("{}: recreating the memfd", what));
    fd = m.get();
    owned.push_back(std::move(m));
  } else {
    std::string path = t.relocate(r.path);
    auto slash = path.rfind('/');
    std::string dir =
        (slash == std::string::npos || slash == 0) ? std::string("/") : std::string(path, 0, slash);
    UniqueFd tmp(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, r.id.mode & 07777));
    if (!tmp) tmp.reset(::open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!tmp) return fail_errno(fmt::format("{}: creating an unlinked file in {}", what, dir));
    fd = tmp.get();
    owned.push_back(std::move(tmp));
  }
  if (auto it = contents.find(r.content_id); it != contents.end()) {
    const auto& data = it->second.bytes;
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::pwrite(fd, data.data() + off, data.size() - off, static_cast<off_t>(off));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail_errno(fmt::format("{}: writing its saved content", what));
      off += static_cast<size_t>(n);
    }
  }
  made[key] = fd;
  return fd;
}

// Raises the soft limit on open files to the hard one: every description of the image is
// open at once while the stand-ins are made (their own limits are set from the image later).
void allow_many_files() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

Result<OpenFiles> open_files(std::span<const image::FdRecord> fds, const FileContents& contents,
                             std::map<ShmKey, UniqueFd> shared_memory, const RestoreTarget& t,
                             const CredentialsOf& creds) {
  allow_many_files();
  OpenFiles files;
  files.shared_memory = std::move(shared_memory);
  CRKIT_TRY(open_pipes(fds, contents, t, creds, &files.descriptions));
  std::map<ShmKey, int> inodes;  // unlinked inodes recreated (or shared memory filled)
  std::vector<UniqueFd> tmpfiles;
  for (const auto& r : fds) {
    if (!r.file_id || files.descriptions.count(r.file_id)) continue;
    if (r.kind == image::FdKind::Socket || r.kind == image::FdKind::Pipe ||
        r.kind == image::FdKind::Fifo)
      continue;
    // Root restarting a user's image opens that user's files with that user's rights.
    const image::Credentials* c = creds ? creds(r.pid) : nullptr;
    CRKIT_ASSIGN(FileCredentials as_owner, FileCredentials::assume(c));
    UniqueFd fd;
    if (r.kind == image::FdKind::Unlinked) {
      CRKIT_ASSIGN(int inode, unlinked_inode(r, contents, t, files, inodes, tmpfiles));
      std::string self = fmt::format("/proc/self/fd/{}", inode);
      fd.reset(::open(self.c_str(), static_cast<int>(reopen_flags(r)) | O_CLOEXEC));
      if (!fd) return fail_errno(fmt::format("{}: reopening the recreated file", describe(r)));
      if (::lseek(fd.get(), static_cast<off_t>(r.pos), SEEK_SET) < 0)
        return fail_errno(fmt::format("{}: seeking to offset {}", describe(r), r.pos));
    } else {
      CRKIT_ASSIGN(fd, open_for_record(r, t));
    }
    files.descriptions[r.file_id] = std::move(fd);
  }
  return files;
}

Status truncate_written_files(RestoreTarget& t, std::span<const image::FdRecord> mine,
                              bool dry_run) {
  std::set<uint32_t> done;
  for (const auto& r : mine) {
    if (r.kind != image::FdKind::Regular || (r.flags & O_ACCMODE) == O_RDONLY) continue;
    if (!done.insert(r.file_id).second) continue;
    // struct stat from the process's own fstat (st_size at offset 48 on x86-64).
    CRKIT_TRY(t.main->check(fmt::format("examining fd {} ({})", r.fd, r.path), SYS_fstat,
                            {static_cast<uint64_t>(r.fd), t.scratch->addr()}));
    CRKIT_ASSIGN(auto st, t.scratch->get_struct<struct stat>(0));
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (size <= r.size_at_checkpoint) continue;
    // The dry run truncates to the current size: it fails where the real one would (an
    // append-only file, a file size limit) and changes nothing.
    CRKIT_TRY(t.main->check(fmt::format("truncating {} (fd {}) back to its checkpoint-time size "
                                        "of {} bytes",
                                        r.path, r.fd, r.size_at_checkpoint),
                            SYS_ftruncate,
                            {static_cast<uint64_t>(r.fd), dry_run ? size : r.size_at_checkpoint}));
  }
  return {};
}

Status install_fd_table(std::span<const image::FdRecord> mine, const OpenFiles& files,
                        std::vector<int>* keep) {
  int highest = 0;
  for (int k : *keep) highest = std::max(highest, k);
  for (const auto& r : mine) highest = std::max(highest, r.fd);
  CRKIT_ASSIGN(auto open_now, proc::list_numeric_dir("/proc/self/fd"));
  for (int fd : open_now) highest = std::max(highest, fd);
  const int base = highest + 1;
  // Everything that stays goes above all restored numbers first.
  std::set<int> stay;
  for (int& k : *keep) {
    int moved = ::fcntl(k, F_DUPFD_CLOEXEC, base);
    if (moved < 0) return fail_errno(fmt::format("moving descriptor {} out of the way", k));
    k = moved;
    stay.insert(moved);
  }
  std::vector<std::pair<const image::FdRecord*, UniqueFd>> placed;
  for (const auto& r : mine) {
    if (r.kind == image::FdKind::Socket) continue;  // left closed (BLCR semantics)
    auto it = files.descriptions.find(r.file_id);
    if (it == files.descriptions.end() || !it->second)
      return fail(EIO, fmt::format("{}: its open file was not prepared", describe(r)));
    UniqueFd fd(::fcntl(it->second.get(), F_DUPFD_CLOEXEC, base));
    if (!fd) return fail_errno(describe(r));
    stay.insert(fd.get());
    placed.emplace_back(&r, std::move(fd));
  }
  CRKIT_ASSIGN(auto now, proc::list_numeric_dir("/proc/self/fd"));
  for (int fd : now)
    if (!stay.count(fd)) ::close(fd);
  for (auto& [rec, fd] : placed) {
    if (::dup2(fd.get(), rec->fd) < 0)
      return fail_errno(fmt::format("placing restored fd {}", rec->fd));
    if (rec->cloexec) ::fcntl(rec->fd, F_SETFD, FD_CLOEXEC);
  }
  placed.clear();  // closes the temporary high descriptors
  return {};
}

}  // namespace crkit::resources
