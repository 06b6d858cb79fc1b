#include "resources/pipes.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "common/log.hpp"
#include "resources/process.hpp"

namespace crkit::resources {
namespace {

using Inode = std::pair<uint64_t, uint64_t>;  // (dev, ino)

bool reads(const image::FdRecord& r) {
  return (r.flags & O_ACCMODE) != O_WRONLY;
}
bool writes(const image::FdRecord& r) {
  return (r.flags & O_ACCMODE) != O_RDONLY;
}
// Pipes in packet mode: one of their descriptors has O_DIRECT (the writers' flag makes the
// packets; a reader's just came with the pipe).
std::set<Inode> packet_mode_pipes(std::span<const image::FdRecord> fds) {
  std::set<Inode> out;
  for (const auto& r : fds)
    if (r.flags & O_DIRECT) out.insert({r.id.dev, r.id.ino});
  return out;
}

bool is_pipe_like(const image::FdRecord& r) {
  return r.kind == image::FdKind::ExternalPipe || r.kind == image::FdKind::Pipe ||
         r.kind == image::FdKind::Fifo;
}

// A duplicate of the process's own descriptor (the same open file description), or an
// invalid one when it cannot be had.
UniqueFd borrow(pid_t pid, int fd) {
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) return UniqueFd();
  UniqueFd mine(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), fd, 0)));
  if (!mine)
    log::debug("process {}: cannot look at fd {} (pidfd_getfd: {})", pid, fd, std::strerror(errno));
  return mine;
}

// Whether the other end of the pipe behind fd of pid is closed everywhere, asked of the
// process's own open file description (a fresh open could not tell): a read end without
// writers polls POLLHUP, a write end without readers POLLERR. False when it cannot be told.
bool other_end_closed(pid_t pid, int fd, bool reader) {
  UniqueFd mine = borrow(pid, fd);
  if (!mine) return false;
  struct pollfd p {
    mine.get(), static_cast<short>(reader ? POLLIN : POLLOUT), 0
  };
  if (::poll(&p, 1, 0) < 0) return false;
  return reader ? (p.revents & POLLHUP) != 0 : (p.revents & POLLERR) != 0;
}

// F_GETPIPE_SZ of the process's own descriptor; 0 (the default size) if it cannot be told.
uint64_t capacity_of(pid_t pid, int fd) {
  UniqueFd mine = borrow(pid, fd);
  int cap = mine ? ::fcntl(mine.get(), F_GETPIPE_SZ) : -1;
  return cap > 0 ? static_cast<uint64_t>(cap) : 0;
}

// The bytes buffered in the pipe behind /proc/PID/fd/FD, copied with tee(2) from a second
// read end so that the pipe keeps them, and its capacity. In packet mode (O_DIRECT) also the
// size of each packet: tee keeps the packets, and each read of a packet returns one.
struct Captured {
  uint64_t capacity = 0;
  std::vector<uint8_t> data;
  std::vector<uint64_t> packets;
};
Result<Captured> capture(const image::FdRecord& r, bool packet_mode) {
  const std::string what =
      fmt::format("process {}: {} {} (fd {})", r.pid, image::fd_kind_name(r.kind), r.path, r.fd);
  std::string src = fmt::format("/proc/{}/fd/{}", r.pid, r.fd);
  UniqueFd reader(::open(src.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!reader) return fail_errno(fmt::format("{}: opening it to copy its data", what));
  Captured c;
  int cap = ::fcntl(reader.get(), F_GETPIPE_SZ);
  int queued = 0;
  if (cap < 0 || ::ioctl(reader.get(), FIONREAD, &queued) < 0)
    return fail_errno(fmt::format("{}: reading its size", what));
  c.capacity = static_cast<uint64_t>(cap);
  if (queued == 0) return c;
  int tmp[2];
  if (::pipe2(tmp, O_CLOEXEC | O_NONBLOCK) < 0)
    return fail_errno(fmt::format("{}: creating a pipe to copy its data", what));
  UniqueFd tr(tmp[0]), tw(tmp[1]);
  // The copy must hold everything: a short copy would lose data silently.
  if (::fcntl(tw.get(), F_SETPIPE_SZ, std::max(cap, queued)) < queued)
    return fail_errno(
        fmt::format("{}: making a pipe large enough for its {} bytes "
                    "(fs.pipe-max-size, fs.pipe-user-pages-soft)",
                    what, queued));
  ssize_t n = ::tee(reader.get(), tw.get(), static_cast<size_t>(queued), SPLICE_F_NONBLOCK);
  if (n < 0) return fail_errno(fmt::format("{}: copying its data with tee", what));
  if (n != queued)
    return fail(EIO, fmt::format("{}: copied {} of the {} bytes it holds", what, n, queued));
  c.data.resize(static_cast<size_t>(n));
  size_t got = 0;
  while (got < c.data.size()) {
    ssize_t k = ::read(tr.get(), c.data.data() + got, c.data.size() - got);
    if (k <= 0) return fail_errno(fmt::format("{}: reading the copy of its data", what));
    if (packet_mode) c.packets.push_back(static_cast<uint64_t>(k));
    got += static_cast<size_t>(k);
  }
  return c;
}

}  // namespace

Status classify_pipes(FilesDump& out, uint32_t* next_content) {
  const std::set<Inode> packet_pipes = packet_mode_pipes(out.fds);
  std::map<Inode, std::vector<size_t>> by_inode;
  for (size_t i = 0; i < out.fds.size(); ++i)
    if (is_pipe_like(out.fds[i])) by_inode[{out.fds[i].id.dev, out.fds[i].id.ino}].push_back(i);
  for (auto& [inode, recs] : by_inode) {
    bool reader = false, writer = false;
    for (size_t i : recs) {
      reader |= reads(out.fds[i]);
      writer |= writes(out.fds[i]);
    }
    const image::FdRecord& first = out.fds[recs.front()];
    const bool packet_mode = packet_pipes.count(inode) != 0;
    bool internal = reader && writer;
    // One end only: the pipe is still internal if the other end is closed everywhere.
    if (!internal) internal = other_end_closed(first.pid, first.fd, reader);
    if (first.kind == image::FdKind::ExternalPipe && internal)
      for (size_t i : recs) out.fds[i].kind = image::FdKind::Pipe;
    if (!internal) continue;
    // Without a reader in the image the data is never read again; only the capacity counts,
    // asked of the process's own descriptor (opening a reader of a FIFO could wake a writer
    // outside that waits for one).
    Captured c;
    if (reader) {
      CRKIT_ASSIGN(c, capture(first, packet_mode));
    } else {
      c.capacity = capacity_of(first.pid, first.fd);
    }
    uint32_t content = 0;
    if (!c.data.empty()) {
      content = (*next_content)++;
      out.pipe_data[content] = std::move(c.data);
      if (packet_mode) out.pipe_packets[content] = std::move(c.packets);
    }
    for (size_t i : recs) {
      out.fds[i].size_at_checkpoint = c.capacity;
      out.fds[i].content_id = content;
    }
  }
  return {};
}

namespace {

// Capacity, then the saved data; in packet mode one write per saved packet.
Status refill(int wr, const image::FdRecord& r, const FileContents& contents, bool packet_mode) {
  if (r.size_at_checkpoint && ::fcntl(wr, F_SETPIPE_SZ, static_cast<int>(r.size_at_checkpoint)) < 0)
    return fail_errno(fmt::format("restoring the size ({} bytes) of {} {}", r.size_at_checkpoint,
                                  image::fd_kind_name(r.kind), r.path));
  auto it = contents.find(r.content_id);
  if (!r.content_id || it == contents.end()) return {};
  const auto& data = it->second.bytes;
  std::vector<uint64_t> pieces =
      packet_mode ? it->second.chunks : std::vector<uint64_t>{data.size()};
  // Non-blocking: data that does not fit is an error, never a hang.
  int fl = ::fcntl(wr, F_GETFL);
  ::fcntl(wr, F_SETFL, (fl | O_NONBLOCK) | (packet_mode ? O_DIRECT : 0));
  size_t off = 0;
  for (uint64_t len : pieces) {
    size_t end = off + len;
    while (off < end) {
      ssize_t n = ::write(wr, data.data() + off, end - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        return fail_errno(fmt::format("refilling {} {} with its {} saved bytes",
                                      image::fd_kind_name(r.kind), r.path, data.size()));
      off += static_cast<size_t>(n);
    }
  }
  ::fcntl(wr, F_SETFL, fl);
  return {};
}

// A FIFO's inode held open for reading and writing (so that opening either end never
// blocks), made again first if its path was removed.
Result<UniqueFd> open_fifo(const image::FdRecord& r, const RestoreTarget& t) {
  std::string path = t.relocate(r.path);
  std::string made;
  if (r.attrs & image::kFdAttrUnlinked) {
    auto slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
    for (int i = 0; made.empty(); ++i) {
      std::string cand = fmt::format("{}.crkit-fifo.{}.{}", dir, ::getpid(), i);
      if (::mkfifo(cand.c_str(), r.id.mode & 07777) == 0)
        made = cand;
      else if (errno != EEXIST || i > 100)
        return fail_errno(fmt::format("making the removed FIFO {} again (in {})", path, dir));
    }
    path = made;
  }
  // The saved path is canonical: a symlink in its place now is not the FIFO.
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW));
  int e = errno;
  if (!made.empty()) ::unlink(made.c_str());
  if (!fd) return fail_sys(e, fmt::format("reopening FIFO {}", path));
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0 || !S_ISFIFO(st.st_mode))
    return fail(ENXIO, fmt::format("reopening FIFO {}: it is no longer a FIFO", path));
  return fd;
}

// One more open file description of the pipe or FIFO held by inode.
Result<UniqueFd> reopen(int inode, const image::FdRecord& r) {
  std::string self = fmt::format("/proc/self/fd/{}", inode);
  UniqueFd fd(::open(self.c_str(), static_cast<int>(r.flags & O_ACCMODE) | O_NONBLOCK | O_CLOEXEC));
  if (!fd)
    return fail_errno(fmt::format("restoring fd {} of process {}: opening {} {}", r.fd, r.pid,
                                  image::fd_kind_name(r.kind), r.path));
  return fd;
}

}  // namespace

Status open_pipes(std::span<const image::FdRecord> fds, const FileContents& contents,
                  const RestoreTarget& t, const CredentialsOf& creds,
                  std::map<uint32_t, UniqueFd>* by_file_id) {
  struct Made {
    UniqueFd rd, wr;  // Pipe: the two ends; Fifo: rd is the O_RDWR holder
    bool rd_used = false, wr_used = false;
  };
  std::map<Inode, Made> made;
  const std::set<Inode> packet_pipes = packet_mode_pipes(fds);
  for (const auto& r : fds) {
    if (r.kind != image::FdKind::Pipe && r.kind != image::FdKind::Fifo) continue;
    if (!r.file_id || by_file_id->count(r.file_id)) continue;
    auto [it, fresh] = made.try_emplace(Inode{r.id.dev, r.id.ino});
    Made& m = it->second;
    if (fresh) {
      const bool packet_mode = packet_pipes.count(it->first) != 0;  // the data came in packets
      if (r.kind == image::FdKind::Pipe) {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) < 0)
          return fail_errno(fmt::format("recreating pipe {} of process {}", r.path, r.pid));
        m.rd.reset(p[0]);
        m.wr.reset(p[1]);
        CRKIT_TRY(refill(m.wr.get(), r, contents, packet_mode));
      } else {
        // Root restarting a user's image opens the user's FIFO with the user's rights.
        CRKIT_ASSIGN(FileCredentials as_owner,
                     FileCredentials::assume(creds ? creds(r.pid) : nullptr));
        CRKIT_ASSIGN(m.rd, open_fifo(r, t));
        CRKIT_TRY(refill(m.rd.get(), r, contents, packet_mode));
      }
    }
    UniqueFd fd;
    const int acc = static_cast<int>(r.flags & O_ACCMODE);
    if (r.kind == image::FdKind::Pipe && acc != O_RDWR) {
      // The first description of each end is the end itself; more are opened anew.
      bool rd = acc == O_RDONLY;
      bool& used = rd ? m.rd_used : m.wr_used;
      int end = (rd ? m.rd : m.wr).get();
      if (!used) {
        fd.reset(::fcntl(end, F_DUPFD_CLOEXEC, 0));
      } else {
        CRKIT_ASSIGN(fd, reopen(end, r));
      }
      used = true;
      if (!fd) return fail_errno(fmt::format("restoring fd {} of process {}", r.fd, r.pid));
    } else {
      CRKIT_ASSIGN(fd, reopen(m.rd.get(), r));
    }
    if (::fcntl(fd.get(), F_SETFL, r.flags & (O_NONBLOCK | O_APPEND | O_DIRECT)) < 0)
      return fail_errno(fmt::format("restoring the flags of fd {} of process {}", r.fd, r.pid));
    (*by_file_id)[r.file_id] = std::move(fd);
  }
  // The holders close here: a pipe whose writers were gone has none again.
  return {};
}

}  // namespace crkit::resources
