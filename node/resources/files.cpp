#include "resources/files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include <fmt/format.h>

#include "common/log.hpp"
#include "common/unique_fd.hpp"
#include "proc/proc.hpp"

namespace crkit::resources {
namespace {

constexpr uint32_t kCloexec = 02000000;
constexpr uint32_t kTmpfileOnly = 020000000;  // __O_TMPFILE without O_DIRECTORY

// fds that refer to one open file description (dup, inheritance) get the same file_id;
// kcmp(KCMP_FILE) tells, comparing only fds of the same inode.
void assign_file_ids(pid_t pid, std::vector<image::FdRecord>& fds) {
  uint32_t next = 1;
  for (size_t i = 0; i < fds.size(); ++i) {
    if (fds[i].kind == image::FdKind::Socket) continue;
    for (size_t j = 0; j < i && !fds[i].file_id; ++j) {
      if (fds[j].id.ino != fds[i].id.ino || fds[j].id.dev != fds[i].id.dev || !fds[j].file_id)
        continue;
      if (::syscall(SYS_kcmp, pid, pid, KCMP_FILE, fds[j].fd, fds[i].fd) == 0)
        fds[i].file_id = fds[j].file_id;
    }
    if (!fds[i].file_id) fds[i].file_id = next++;
  }
}

// A pipe whose read and write ends are both in the image is recreated at restart with the
// data it holds now. The data is copied with tee(2) from a second read end, so the
// running process keeps it.
Status capture_internal_pipes(pid_t pid, FilesDump& out, uint32_t& next_content) {
  std::map<uint64_t, std::pair<bool, bool>> ends;  // ino -> (has reader, has writer)
  for (const auto& r : out.fds)
    if (r.kind == image::FdKind::ExternalPipe && r.path.rfind("pipe:", 0) == 0) {
      auto& e = ends[r.id.ino];
      ((r.flags & O_ACCMODE) == O_RDONLY ? e.first : e.second) = true;
    }
  std::map<uint64_t, bool> captured;
  for (auto& r : out.fds) {
    auto it = ends.find(r.id.ino);
    if (r.kind != image::FdKind::ExternalPipe || it == ends.end() || !it->second.first ||
        !it->second.second)
      continue;
    r.kind = image::FdKind::Pipe;
    if (captured[r.id.ino]) continue;
    captured[r.id.ino] = true;
    std::string src = fmt::format("/proc/{}/fd/{}", pid, r.fd);
    UniqueFd reader(::open(src.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!reader)
      return fail_errno(
          fmt::format("process {}: opening pipe {} (fd {}) to copy its data", pid, r.path, r.fd));
    int cap = ::fcntl(reader.get(), F_GETPIPE_SZ);
    if (cap < 0)
      return fail_errno(fmt::format("process {}: reading the size of pipe {}", pid, r.path));
    r.size_at_checkpoint = static_cast<uint64_t>(cap);
    int tmp[2];
    if (::pipe2(tmp, O_CLOEXEC | O_NONBLOCK) < 0)
      return fail_errno("creating a pipe to copy pipe data");
    UniqueFd tr(tmp[0]), tw(tmp[1]);
    ::fcntl(tw.get(), F_SETPIPE_SZ, cap);
    ssize_t n = ::tee(reader.get(), tw.get(), static_cast<size_t>(cap), SPLICE_F_NONBLOCK);
    if (n < 0 && errno != EAGAIN)
      return fail_errno(
          fmt::format("process {}: copying the data of pipe {} with tee", pid, r.path));
    std::vector<uint8_t> data(n > 0 ? static_cast<size_t>(n) : 0);
    size_t got = 0;
    while (got < data.size()) {
      ssize_t k = ::read(tr.get(), data.data() + got, data.size() - got);
      if (k <= 0)
        return fail_errno(
            fmt::format("process {}: reading the copied data of pipe {}", pid, r.path));
      got += static_cast<size_t>(k);
    }
    r.content_id = next_content++;
    out.pipe_data[r.content_id] = std::move(data);
  }
  return {};
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

bool is_tty_device(dev_t rdev) {
  unsigned maj = major(rdev), min = minor(rdev);
  return maj == 4 || (maj >= 136 && maj <= 143) || (maj == 5 && (min == 0 || min == 1));
}

}  // namespace

Result<FilesDump> dump_files(pid_t pid) {
  FilesDump out;
  CRKIT_ASSIGN(auto fds, proc::list_fds(pid));
  uint32_t next_content = 1;
  for (int fd : fds) {
    std::string link_path = fmt::format("/proc/{}/fd/{}", pid, fd);
    auto link = proc::read_link(link_path);
    if (!link) continue;  // closed meanwhile (cannot happen while frozen, but harmless)
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
    if (info.flags & O_PATH) return unsupported("an O_PATH descriptor");
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
    r.size_at_checkpoint = static_cast<uint64_t>(st.st_size);
    if (S_ISREG(st.st_mode)) {
      if (ends_with(*link, " (deleted)") || st.st_nlink == 0) {
        r.kind = image::FdKind::Unlinked;
        if (ends_with(r.path, " (deleted)")) r.path.resize(r.path.size() - 10);
        r.content_id = next_content++;
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
      r.kind = image::FdKind::ExternalPipe;
    } else if (S_ISSOCK(st.st_mode)) {
      r.kind = image::FdKind::Socket;
      log::warn(
          "process {}: fd {} ({}) is a socket; it is not saved and will be closed after restart",
          pid, fd, *link);
    } else {
      return unsupported(S_ISBLK(st.st_mode) ? "a block device" : "this file type");
    }
    out.fds.push_back(std::move(r));
  }
  assign_file_ids(pid, out.fds);
  CRKIT_TRY(capture_internal_pipes(pid, out, next_content));
  return out;
}

Status write_file_contents(const FilesDump& files, image::ImageWriter& w) {
  for (const auto& [id, data] : files.pipe_data) {
    image::FileContentHeader h;
    h.content_id = id;
    h.total_size = data.size();
    CRKIT_TRY(w.write_file_content(h, data));
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

// Opens what record r describes, as a new descriptor (any number).
Result<UniqueFd> open_for_record(const image::FdRecord& r, const FileContents& contents,
                                 const RestoreTarget& t) {
  // Flags that only mean something to open() itself are not re-applied.
  const uint32_t open_flags =
      r.flags & ~static_cast<uint32_t>(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | kTmpfileOnly |
                                       (r.kind == image::FdKind::Directory ? 0 : O_DIRECTORY));
  const std::string what =
      fmt::format("restoring fd {} ({} {})", r.fd, image::fd_kind_name(r.kind), r.path);
  switch (r.kind) {
    case image::FdKind::Regular: {
      std::string path = t.relocate(r.path);
      // The saved path is canonical: a symlink in its place now is not the same file.
      UniqueFd fd(::open(path.c_str(), static_cast<int>(open_flags) | O_CLOEXEC | O_NOFOLLOW));
      if (!fd) return fail_errno(fmt::format("{}: cannot reopen {}", what, path));
      // BLCR semantics: a file open for writing goes back to its checkpoint-time size.
      if ((r.flags & O_ACCMODE) != O_RDONLY) {
        struct stat st {};
        if (::fstat(fd.get(), &st) == 0 &&
            static_cast<uint64_t>(st.st_size) > r.size_at_checkpoint &&
            ::ftruncate(fd.get(), static_cast<off_t>(r.size_at_checkpoint)) < 0)
          return fail_errno(
              fmt::format("{}: truncating {} back to {} bytes", what, path, r.size_at_checkpoint));
      }
      if (::lseek(fd.get(), static_cast<off_t>(r.pos), SEEK_SET) < 0)
        return fail_errno(fmt::format("{}: seeking {} to offset {}", what, path, r.pos));
      return fd;
    }
    case image::FdKind::Unlinked: {
      std::string path = t.relocate(r.path);
      auto slash = path.rfind('/');
      std::string dir = (slash == std::string::npos || slash == 0) ? std::string("/")
                                                                   : std::string(path, 0, slash);
      UniqueFd tmp(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, r.id.mode & 07777));
      if (!tmp) tmp.reset(::open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
      if (!tmp) return fail_errno(fmt::format("{}: creating an unlinked file in {}", what, dir));
      if (auto it = contents.find(r.content_id); it != contents.end()) {
        size_t off = 0;
        while (off < it->second.size()) {
          ssize_t n = ::write(tmp.get(), it->second.data() + off, it->second.size() - off);
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) return fail_errno(fmt::format("{}: writing its saved content", what));
          off += static_cast<size_t>(n);
        }
      }
      std::string self = fmt::format("/proc/self/fd/{}", tmp.get());
      UniqueFd fd(::open(self.c_str(), static_cast<int>(open_flags) | O_CLOEXEC));
      if (!fd) return fail_errno(fmt::format("{}: reopening the recreated file", what));
      if (::lseek(fd.get(), static_cast<off_t>(r.pos), SEEK_SET) < 0)
        return fail_errno(fmt::format("{}: seeking to offset {}", what, r.pos));
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
      UniqueFd fd(::open(r.path.c_str(), static_cast<int>(open_flags) | O_CLOEXEC));
      if (!fd) return fail_errno(fmt::format("{}: cannot reopen device {}", what, r.path));
      return fd;
    }
    case image::FdKind::Tty: {
      // The restarter's terminal takes the place of the original one.
      for (int s : {0, 1, 2})
        if (::isatty(s)) {
          int fd = ::fcntl(s, F_DUPFD_CLOEXEC, 0);
          if (fd >= 0) return UniqueFd(fd);
        }
      UniqueFd fd(::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY));
      if (!fd) {
        log::warn(
            "fd {} was the terminal {}; cr_restart has no terminal, so it now refers to /dev/null",
            r.fd, r.path);
        fd.reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
      }
      if (!fd) return fail_errno(what);
      return fd;
    }
    case image::FdKind::ExternalPipe: {
      // BLCR semantics: pipe ends leading outside the checkpoint become cr_restart's
      // stdin (read end) or stdout (write end).
      int src = (r.flags & O_ACCMODE) == O_RDONLY ? 0 : 1;
      int fd = ::fcntl(src, F_DUPFD_CLOEXEC, 0);
      if (fd < 0)
        return fail_errno(
            fmt::format("{}: duplicating cr_restart's {}", what, src ? "stdout" : "stdin"));
      return UniqueFd(fd);
    }
    case image::FdKind::Socket:
    case image::FdKind::Pipe:  // created by restore_files_in_standin, pipe by pipe
      break;
  }
  return UniqueFd();
}

// Recreates a pipe internal to the image: its capacity, then the data it held.
Status create_pipe(const image::FdRecord& r, const FileContents& contents, UniqueFd* rd,
                   UniqueFd* wr) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0)
    return fail_errno(fmt::format("recreating pipe {} (fd {})", r.path, r.fd));
  rd->reset(p[0]);
  wr->reset(p[1]);
  if (r.size_at_checkpoint &&
      ::fcntl(p[1], F_SETPIPE_SZ, static_cast<int>(r.size_at_checkpoint)) < 0)
    return fail_errno(
        fmt::format("restoring the size ({} bytes) of pipe {}", r.size_at_checkpoint, r.path));
  auto it = contents.find(r.content_id);
  if (it == contents.end()) return {};
  size_t off = 0;
  while (off < it->second.size()) {
    ssize_t n = ::write(p[1], it->second.data() + off, it->second.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return fail_errno(
          fmt::format("refilling pipe {} with its {} saved bytes", r.path, it->second.size()));
    off += static_cast<size_t>(n);
  }
  return {};
}

}  // namespace

Status restore_files_in_standin(const std::vector<image::FdRecord>& fds,
                                const FileContents& contents, const RestoreTarget& t,
                                int* keep_fd) {
  int highest = *keep_fd;
  for (const auto& r : fds) highest = std::max(highest, r.fd);
  CRKIT_ASSIGN(auto open_now, proc::list_numeric_dir("/proc/self/fd"));
  for (int fd : open_now) highest = std::max(highest, fd);
  const int base = highest + 1;
  // Move our report channel out of the way first.
  int moved = ::fcntl(*keep_fd, F_DUPFD_CLOEXEC, base);
  if (moved < 0) return fail_errno("moving the restorer's channel");
  ::close(*keep_fd);
  *keep_fd = moved;

  std::vector<std::pair<const image::FdRecord*, UniqueFd>> opened;
  std::map<uint32_t, int> by_file_id;                       // file_id -> an opened fd sharing it
  std::map<uint64_t, std::pair<UniqueFd, UniqueFd>> pipes;  // pipe inode -> (read, write)
  for (const auto& r : fds) {
    UniqueFd fd;
    if (auto it = by_file_id.find(r.file_id); r.file_id && it != by_file_id.end()) {
      fd.reset(::fcntl(it->second, F_DUPFD_CLOEXEC, base));  // one open file, shared
      if (!fd) return fail_errno(fmt::format("restoring fd {} as a duplicate", r.fd));
    } else if (r.kind == image::FdKind::Pipe) {
      auto& [rd, wr] = pipes[r.id.ino];
      if (!rd) {
        CRKIT_TRY(create_pipe(r, contents, &rd, &wr));
      }
      bool reader = (r.flags & O_ACCMODE) == O_RDONLY;
      fd.reset(::fcntl((reader ? rd : wr).get(), F_DUPFD_CLOEXEC, base));
      if (!fd) return fail_errno(fmt::format("restoring pipe fd {}", r.fd));
      ::fcntl(fd.get(), F_SETFL, r.flags & O_NONBLOCK);
    } else {
      CRKIT_ASSIGN(UniqueFd opened_fd, open_for_record(r, contents, t));
      if (!opened_fd) continue;  // sockets: left closed
      fd.reset(::fcntl(opened_fd.get(), F_DUPFD_CLOEXEC, base));
      if (!fd) return fail_errno(fmt::format("restoring fd {}", r.fd));
    }
    if (r.file_id && !by_file_id.count(r.file_id)) by_file_id[r.file_id] = fd.get();
    opened.emplace_back(&r, std::move(fd));
  }
  pipes.clear();
  std::set<int> keep{*keep_fd};
  for (auto& [rec, fd] : opened) keep.insert(fd.get());
  CRKIT_ASSIGN(auto now, proc::list_numeric_dir("/proc/self/fd"));
  for (int fd : now)
    if (!keep.count(fd)) ::close(fd);
  for (auto& [rec, fd] : opened) {
    if (::dup2(fd.get(), rec->fd) < 0)
      return fail_errno(fmt::format("placing restored fd {}", rec->fd));
    if (rec->cloexec) ::fcntl(rec->fd, F_SETFD, FD_CLOEXEC);
  }
  opened.clear();  // closes the temporary high descriptors
  return {};
}

}  // namespace crkit::resources
