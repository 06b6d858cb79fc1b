#include "resources/libcr_peer.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "common/unique_fd.hpp"
#include "inject/remote_memory.hpp"
#include "libcr/control_block.h"
#include "libcr/sync_words.h"
#include "proc/proc.hpp"

namespace crkit::resources {
namespace {

using libcr::cas;
using libcr::ControlBlock;
using libcr::futex_wait;
using libcr::futex_wake;
using libcr::load;
using libcr::store;

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

bool past(const Deadline& d) {
  return d && std::chrono::steady_clock::now() >= *d;
}

// The descriptor of pid's control block, or nothing when pid has no libcr.
Result<std::optional<int>> find_control_fd(pid_t pid) {
  auto fds = proc::list_fds(pid);
  if (!fds) return std::optional<int>();  // exited, or not ours: the freeze will say
  const std::string want = fmt::format("/memfd:{}", libcr::kControlName);
  for (int fd : *fds) {
    auto link = proc::read_link(fmt::format("/proc/{}/fd/{}", pid, fd));
    if (link && link->rfind(want, 0) == 0) return std::optional<int>(fd);
  }
  return std::optional<int>();
}

const char* reply_name(int code) {
  switch (code) {
    case libcr::kReplyReady:
      return "ready";
    case libcr::kReplyOmit:
      return "omit";
    case libcr::kReplyTempFail:
      return "temporary failure";
    case libcr::kReplyPermFail:
      return "permanent failure";
  }
  return "?";
}

}  // namespace

LibcrSession::LibcrSession(LibcrSession&& o) noexcept
    : peers_(std::move(o.peers_)), omitted_(std::move(o.omitted_)) {
  o.peers_.clear();
}
LibcrSession& LibcrSession::operator=(LibcrSession&& o) noexcept {
  if (this != &o) {
    release();
    peers_ = std::move(o.peers_);
    omitted_ = std::move(o.omitted_);
    o.peers_.clear();
  }
  return *this;
}
LibcrSession::~LibcrSession() {
  release();
}

void LibcrSession::release() {
  for (auto& p : peers_) {
    if (!p.cb) continue;
    if (!p.told) tell(p, libcr::kOutcomeFailed, kCrETempFail);
    cas(&p.cb->claim, p.claim, uint64_t{0});  // (unless it was taken over)
    ::munmap(p.cb, sizeof(ControlBlock));
    p.cb = nullptr;
  }
  peers_.clear();
}

bool LibcrSession::asked(pid_t pid) const {
  return omitted_.count(pid) ||
         std::any_of(peers_.begin(), peers_.end(), [&](const Peer& p) { return p.pid == pid; });
}

uint32_t LibcrSession::seq_of(pid_t pid) const {
  for (const auto& p : peers_)
    if (p.pid == pid) return p.seq;
  return 0;
}

Status LibcrSession::ask(pid_t pid, const LibcrRequest& req) {
  if (asked(pid)) return {};
  CRKIT_ASSIGN(auto fd, find_control_fd(pid));
  if (!fd) return {};
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) return {};  // exited meanwhile
  UniqueFd mine(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), *fd, 0)));
  if (!mine) {
    if (errno == ESRCH || errno == EBADF) return {};
    return fail_errno(fmt::format("process {}: taking its libcr control block", pid));
  }
  // Only a block that cannot shrink under us (libcr seals it): a process could otherwise make
  // us fault on its pages.
  struct stat fst {};
  int seals = ::fcntl(mine.get(), F_GET_SEALS);
  if (::fstat(mine.get(), &fst) < 0 || fst.st_size < static_cast<off_t>(sizeof(ControlBlock)) ||
      seals < 0 || !(seals & F_SEAL_SHRINK)) {
    log::info("process {}: its fd {} looks like a libcr control block but is not one", pid, *fd);
    return {};
  }
  void* m =
      ::mmap(nullptr, sizeof(ControlBlock), PROT_READ | PROT_WRITE, MAP_SHARED, mine.get(), 0);
  if (m == MAP_FAILED)
    return fail_errno(fmt::format("process {}: mapping its libcr control block", pid));
  Peer p;  // (the mapping keeps the memfd; our descriptor closes on return)
  p.pid = pid;
  p.cb = static_cast<ControlBlock*>(m);
  ControlBlock* cb = p.cb;
  auto drop = [&]() { ::munmap(m, sizeof(ControlBlock)); };
  if (load(&cb->magic) != libcr::kControlMagic || cb->version != libcr::kControlVersion) {
    log::warn(
        "process {}: its libcr control block is of another version; it is checkpointed "
        "without callbacks",
        pid);
    drop();
    return {};
  }
  auto st = proc::read_status(pid);
  pid_t own_view = st && !st->nspid.empty() ? st->nspid.back() : pid;
  if (cb->pid != pid && cb->pid != own_view) {  // a fork child before it made its own block
    drop();
    return {};
  }
  if (cb->kind == libcr::kKindOmit) {
    log::info("process {} runs under libcr_omit: it is left out", pid);
    omitted_.insert(pid);
    drop();
    return {};
  }
  if (cb->kind != libcr::kKindFull) {
    drop();
    return {};  // libcr_run: nothing to do inside it
  }
  if (st && !(st->sig_cgt & (1ull << (libcr::kSignal - 1)))) {
    log::warn(
        "process {} has libcr but does not catch signal {}: it is checkpointed without "
        "callbacks",
        pid, libcr::kSignal);
    drop();
    return {};
  }
  // Claim the block for this request.
  const int32_t me = ::getpid();
  auto next_seq = [&]() {
    uint32_t n = load(&cb->req_seq) + 1;
    return n == 0 || n > 0x7fffffff ? 1u : n;
  };
  auto claim_word = [&](uint32_t seq) { return (uint64_t{seq} << 32) | static_cast<uint32_t>(me); };
  uint32_t seq = next_seq();
  for (int attempt = 0;; ++attempt) {
    uint64_t held = 0;
    if (__atomic_compare_exchange_n(&cb->claim, &held, claim_word(seq), false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
      break;
    const pid_t holder = static_cast<pid_t>(held & 0xffffffff);
    const uint32_t held_seq = static_cast<uint32_t>(held >> 32);
    auto hs = proc::read_stat(holder);
    // A holder that is gone, or whose request is over (it may not have let go yet).
    bool over = static_cast<int32_t>(load(&cb->done_seq) - held_seq) >= 0;
    bool stale = !hs || proc::is_zombie(*hs) || over;
    if (!stale || attempt > 8) {
      drop();
      return fail(EBUSY, fmt::format("process {} is being checkpointed already (by process {})",
                                     pid, holder));
    }
    cas(&cb->claim, held, uint64_t{0});
    seq = next_seq();
  }
  if (uint32_t now = next_seq(); now != seq) {  // a stale holder had moved on meanwhile
    seq = now;
    store(&cb->claim, claim_word(seq));
  }
  p.claim = claim_word(seq);
  // A stopped process would not answer before it is continued. (One in a tracing stop is
  // someone else's: the freeze says so.)
  if (auto ps = proc::read_stat(pid); ps && (ps->state == 'T' || ps->state == 't')) {
    if (ps->state == 'T')
      log::warn("process {} is stopped: it is checkpointed without running its libcr callbacks",
                pid);
    store(&cb->claim, uint64_t{0});
    drop();
    return {};
  }
  cb->req_requester = req.requester;
  cb->req_target = req.target;
  cb->req_scope = static_cast<int32_t>(req.scope) - 1;  // BLCR's cr_scope_t
  cb->req_signal = req.signal;
  cb->req_flags = 0;
  std::snprintf(cb->req_dest, sizeof cb->req_dest, "%s", req.dest.c_str());
  store(&cb->req_seq, seq);
  p.seq = seq;
  siginfo_t si{};
  si.si_signo = libcr::kSignal;
  si.si_code = SI_QUEUE;
  si.si_pid = me;
  si.si_uid = ::getuid();
  si.si_value.sival_int = static_cast<int>(seq);
  if (::syscall(SYS_rt_sigqueueinfo, pid, libcr::kSignal, &si) < 0) {
    int e = errno;
    store(&cb->claim, uint64_t{0});
    drop();
    if (e == ESRCH) return {};
    return fail(
        e, fmt::format("process {}: sending the checkpoint request: {}", pid, std::strerror(e)));
  }
  log::info("process {}: libcr request {} sent", pid, seq);
  peers_.push_back(std::move(p));
  return {};
}

Result<LibcrReplies> LibcrSession::wait_replies(const Deadline& deadline,
                                                const std::function<bool()>& keep_going) {
  LibcrReplies out;
  out.omitted = omitted_;
  for (;;) {
    Peer* waiting = nullptr;
    for (auto& p : peers_) {
      if (p.replied) continue;
      if (load(&p.cb->reply_seq) != p.seq) {
        if (!alive(p.pid)) {
          p.replied = p.told = true;  // it died: the freeze will notice
          continue;
        }
        waiting = &p;
        continue;
      }
      p.replied = true;
      int code = p.cb->reply_code;
      int value = p.cb->reply_value & 0xffff;
      log::info("process {}: libcr replied {}", p.pid, reply_name(code));
      uint32_t n = std::min<uint32_t>(load(&p.cb->n_forwards), libcr::kMaxForwards);
      for (uint32_t i = 0; i < n; ++i) {
        int32_t scope = p.cb->forwards[i].scope, fpid = p.cb->forwards[i].pid;
        if (scope >= 0 && scope <= 3 && fpid > 0)
          out.forwarded.push_back({static_cast<Scope>(scope + 1), fpid, p.pid});
      }
      if (code == libcr::kReplyOmit) {
        out.omitted.insert(p.pid);
        omitted_.insert(p.pid);
        tell(p, libcr::kOutcomeOmitted, 0);
      } else if (code == libcr::kReplyTempFail) {
        if (!out.temp_fail) out.temp_fail = value ? value : kCrETempFail;
      } else if (code == libcr::kReplyPermFail) {
        if (!out.perm_fail) out.perm_fail = value ? value : kCrEPermFail;
      }
    }
    if (!waiting) return out;
    heartbeat();
    if (past(deadline))
      return fail(ETIMEDOUT, fmt::format("process {}: its checkpoint callbacks did not finish in "
                                         "the time limit",
                                         waiting->pid));
    if (keep_going && !keep_going())
      return fail(EINTR, "the checkpoint was cancelled while callbacks ran");
    futex_wait(&waiting->cb->reply_seq, load(&waiting->cb->reply_seq), 50, true);
  }
}

std::set<int> LibcrSession::private_fds(pid_t pid) const {
  std::set<int> out;
  for (const auto& p : peers_)
    if (p.pid == pid) {
      uint32_t n = std::min<uint32_t>(load(&p.cb->n_private_fds), libcr::kMaxPrivateFds);
      for (uint32_t i = 0; i < n; ++i) out.insert(p.cb->private_fds[i]);
    }
  return out;
}

std::set<pid_t> LibcrSession::helpers() const {
  std::set<pid_t> out;
  for (const auto& p : peers_)
    for (int i = 0; i < libcr::kMaxHelpers; ++i)
      if (int32_t h = load(&p.cb->helpers[i]); h > 0) out.insert(h);
  return out;
}

bool LibcrSession::any_gave_up() const {
  for (const auto& p : peers_)
    if (!p.told && load(&p.cb->outcome_seq) == p.seq) return true;
  return false;
}

void LibcrSession::heartbeat() {
  for (auto& p : peers_)
    if (p.cb) __atomic_add_fetch(&p.cb->heartbeat, 1u, __ATOMIC_RELEASE);
}

void LibcrSession::tell(Peer& p, int outcome, int value) {
  ControlBlock* cb = p.cb;
  cb->outcome_code = outcome;
  cb->outcome_value = value;
  store(&cb->outcome_seq, p.seq);
  futex_wake(&cb->outcome_seq, true);
  p.told = true;
}

void LibcrSession::finish(int outcome, int value, const Deadline& deadline) {
  for (auto& p : peers_)
    if (!p.told) tell(p, outcome, value);
  for (auto& p : peers_) {
    while (static_cast<int32_t>(load(&p.cb->done_seq) - p.seq) < 0 && alive(p.pid) &&
           !past(deadline)) {
      heartbeat();
      futex_wait(&p.cb->done_seq, load(&p.cb->done_seq), 50, true);
    }
  }
  release();
}

Status mark_restarted(pid_t real_pid, std::span<const image::VmaRecord> vmas, pid_t requester,
                      const std::string& src) {
  const std::string want = fmt::format("/memfd:{}", libcr::kControlName);
  for (const auto& v : vmas) {
    if (v.kind != image::VmaKind::AnonShared || v.name.rfind(want, 0) != 0 ||
        v.end - v.start < sizeof(ControlBlock) || v.pgoff != 0)
      continue;
    auto block = std::make_unique<ControlBlock>();  // (aligned as the type wants)
    std::span<uint8_t> buf(reinterpret_cast<uint8_t*>(block.get()), sizeof(ControlBlock));
    CRKIT_TRY(inject::read_memory(real_pid, v.start, buf));
    ControlBlock* cb = block.get();
    if (cb->magic != libcr::kControlMagic || cb->version != libcr::kControlVersion) continue;
    // Only a block whose process waits for the outcome of the checkpoint it is in.
    if (cb->reply_seq != cb->req_seq || cb->outcome_seq == cb->req_seq || cb->req_seq == 0)
      continue;
    cb->outcome_code = libcr::kOutcomeRestarted;
    cb->outcome_value = 0;
    cb->restart_requester = requester;
    std::snprintf(cb->restart_src, sizeof cb->restart_src, "%s", src.c_str());
    cb->claim = 0;
    cb->outcome_seq = cb->req_seq;
    CRKIT_TRY(inject::write_memory(real_pid, v.start, buf));
    log::info("restarted process {}: told libcr it was restarted", real_pid);
  }
  return {};
}

}  // namespace crkit::resources
