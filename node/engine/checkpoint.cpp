#include "engine/checkpoint.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <set>
#include <system_error>
#include <thread>

#include <fmt/format.h>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "engine/remote_scratch.hpp"
#include "inject/cow_copy.hpp"
#include "libcr/control_block.h"
#include "proc/proc.hpp"
#include "resources/files.hpp"
#include "resources/page_pipeline.hpp"
#include "resources/process.hpp"
#include "resources/threads.hpp"

namespace crkit::engine {
namespace {

// A process may be checkpointed only by a user who could ptrace it; say so before anything
// else is tried.
Status check_owner(pid_t pid) {
  auto st = proc::read_status(pid);
  if (!st) return fail(st.error());
  uid_t me = ::getuid();
  if (::geteuid() != 0 && (st->uid[0] != me || st->uid[1] != me || st->uid[2] != me))
    return fail(EPERM,
                fmt::format("cannot checkpoint process {}: it belongs to uid {} and you are uid {} "
                            "(Operation not permitted)",
                            pid, st->uid[1], me));
  return {};
}

struct FrozenScope {
  inject::FrozenTree tree;  // in tree order
  std::vector<proc::Stat> zombies;
};

struct Request {
  Scope scope;
  pid_t id;
  std::vector<resources::LibcrForward> forwarded;
  std::set<pid_t> omitted;
  std::set<pid_t> helpers;  // libcr's own helper processes
};

// The cr_checkpoint/cr_restart that libcr runs for a request of its own: never a member
// (for one that has not marked itself in its parent's block yet).
bool is_libcr_helper(pid_t pid) {
  auto text = proc::read_file(fmt::format("/proc/{}/cmdline", pid));
  return text && text->find("--libcr-report=") != std::string::npos;
}

// A forwarded process joins only if its forwarder could checkpoint it itself.
bool may_forward(pid_t from, pid_t member) {
  auto f = proc::read_status(from);
  auto m = proc::read_status(member);
  if (!f || !m) return false;
  if (f->uid[1] == 0) return true;
  for (int i = 0; i < 3; ++i)
    if (m->uid[i] != f->uid[1]) return false;
  return true;
}

// The members of the request plus what libcr callbacks forwarded, minus what they omitted.
Result<resources::ScopeMembers> members_of(const Request& r) {
  CRKIT_ASSIGN(auto table, proc::read_process_table());
  CRKIT_ASSIGN(auto members, resources::resolve_scope(table, r.scope, r.id, ::getpid()));
  for (const auto& f : r.forwarded) {
    auto more = resources::resolve_scope(table, f.scope, f.id, ::getpid());
    if (!more) continue;  // gone meanwhile
    for (pid_t q : more->pids) {
      if (std::find(members.pids.begin(), members.pids.end(), q) != members.pids.end()) continue;
      if (!may_forward(f.from, q)) {
        log::warn(
            "process {} forwarded the checkpoint to process {}, which it may not "
            "checkpoint: left out",
            f.from, q);
        continue;
      }
      members.pids.push_back(q);
    }
  }
  std::erase_if(members.pids, [&](pid_t q) {
    return r.omitted.count(q) > 0 || r.helpers.count(q) > 0 || is_libcr_helper(q);
  });
  return members;
}

// Freezes every member of the request. A member that was not frozen yet may fork, so the
// process table is read again until a pass finds no new member; frozen processes cannot
// fork, so this ends.
Result<FrozenScope> freeze_scope(const Request& r, const std::function<bool()>& keep_going) {
  const Scope scope = r.scope;
  const pid_t id = r.id;
  FrozenScope out;
  for (int pass = 0;; ++pass) {
    if (pass == 1000)
      return fail(EAGAIN, fmt::format("{} {} keeps creating processes faster than they can be "
                                      "frozen",
                                      resources::scope_name(scope), id));
    CRKIT_ASSIGN(auto members, members_of(r));
    bool changed = false;
    for (pid_t p : members.pids) {
      if (out.tree.contains(p)) continue;
      if (Status owned = check_owner(p); !owned) {
        if (owned.error().code == ESRCH && p != id) {  // exited meanwhile: look again
          changed = true;
          continue;
        }
        return fail(owned.error());
      }
      auto f = inject::FrozenProcess::freeze(p, keep_going);
      if (!f) {
        // A member other than the named process may exit meanwhile: look again.
        if (f.error().code == ESRCH && p != id) {
          changed = true;
          continue;
        }
        return fail(f.error());
      }
      out.tree.add(std::move(*f));
      changed = true;
    }
    if (!changed) {
      out.tree.keep_only(members.pids);
      out.zombies = std::move(members.zombies);
      return out;
    }
  }
}

struct ProcessDump {
  image::ProcessRecord process;
  std::vector<image::ThreadRecord> threads;
  resources::MemoryPlan memory;
};

// The smaps of every process, read by parallel threads: it is the slowest part of a frozen
// process's state (the kernel walks all its page tables to count Rss and Pss), and it needs
// no ptrace, so other threads than the tracer can read it. All are read before any scratch
// area is mapped (processes sharing an address space, vfork, would see each other's).
std::vector<Result<std::vector<proc::MapEntry>>> read_all_smaps(const std::vector<pid_t>& pids) {
  std::vector<Result<std::vector<proc::MapEntry>>> out(
      pids.size(), Result<std::vector<proc::MapEntry>>(std::vector<proc::MapEntry>{}));
  const size_t workers =
      std::min<size_t>(pids.size(), std::max<long>(1, ::sysconf(_SC_NPROCESSORS_ONLN)));
  std::atomic<size_t> next{0};
  auto work = [&]() noexcept {
    for (size_t i; (i = next.fetch_add(1)) < pids.size();) {
      try {
        out[i] = proc::read_smaps(pids[i]);
      } catch (const std::exception& e) {  // (bad_alloc): an error, not std::terminate
        out[i] = fail(ENOMEM, fmt::format("reading /proc/{}/smaps: {}", pids[i], e.what()));
      }
    }
  };
  std::vector<std::thread> threads;
  for (size_t k = 1; k < workers; ++k) {
    try {
      threads.emplace_back(work);
    } catch (const std::system_error&) {
      break;  // no more threads allowed (RLIMIT_NPROC, a pids cgroup): fewer do it all
    }
  }
  work();
  for (auto& t : threads) t.join();
  return out;
}

Result<ProcessDump> dump_process_state(const inject::FrozenProcess& frozen,
                                       std::vector<proc::MapEntry> smaps,
                                       resources::SharedPagesSeen* shared_seen) {
  const pid_t pid = frozen.pid();
  CRKIT_ASSIGN(uint64_t site, inject::find_syscall_site(pid));
  inject::RemoteCaller main(pid, site);
  CRKIT_ASSIGN(RemoteScratch scratch, RemoteScratch::map(pid, main));
  resources::DumpTarget t{pid, frozen.tids(), site, &main, &scratch};

  ProcessDump d;
  auto collect = [&]() -> Status {
    CRKIT_ASSIGN(d.process, resources::dump_process(t));
    d.process.was_stopped = frozen.was_stopped() ? 1 : 0;
    CRKIT_ASSIGN(d.threads, resources::dump_threads(t, frozen.stashed_signals()));
    // smaps was read before the scratch area existed, so the plan does not include it.
    resources::RemoteAccess remote{&main, &scratch};
    CRKIT_ASSIGN(d.memory, resources::plan_memory(pid, smaps, &remote, shared_seen));
    return {};
  };
  Status collected = collect();
  // The scratch area must go before memory is read or the target released.
  Status unmapped = scratch.unmap(main);
  if (!collected) return fail(collected.error());
  if (!unmapped) return fail(unmapped.error());
  return d;
}

image::ImageInfo image_info(Scope scope, pid_t id, const std::vector<ProcessDump>& dumps) {
  image::ImageInfo info;
  const auto& first = dumps.front().threads;
  info.page_size = static_cast<uint32_t>(::sysconf(_SC_PAGESIZE));
  info.xsave_size = first.empty() ? 0 : static_cast<uint32_t>(first.front().xstate.size());
  info.xfeatures = first.empty() ? 0 : inject::xstate_features(first.front().xstate);
  info.created_unix = static_cast<int64_t>(::time(nullptr));
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  info.hostname = host;
  struct utsname u {};
  ::uname(&u);
  info.kernel_release = u.release;
  info.crkit_version = CRKIT_VERSION;
  info.scope = static_cast<uint32_t>(scope);
  info.target = id;
  info.process_count = static_cast<uint32_t>(dumps.size());
  return info;
}

}  // namespace

Status check_request(Scope scope, pid_t id) {
  CRKIT_ASSIGN(auto table, proc::read_process_table());
  CRKIT_ASSIGN(auto members, resources::resolve_scope(table, scope, id, ::getpid()));
  for (pid_t p : members.pids)
    if (Status owned = check_owner(p); !owned && (owned.error().code != ESRCH || p == id))
      return owned;  // (another member may exit meanwhile)
  return {};
}

namespace {

// Asks the libcr processes of the request (and of what their callbacks forward) to get ready.
// On error the session tells every process that waits that the checkpoint failed.
// Returns the members that are left (not omitted) as of the last round.
Result<std::vector<pid_t>> run_callbacks(Request& r, resources::LibcrSession& session,
                                         const CheckpointOptions& opts,
                                         const std::function<bool()>& keep_going) {
  resources::LibcrRequest req = opts.request;
  if (!req.requester) req.requester = ::getpid();
  req.target = r.id;
  req.scope = r.scope;
  bool told_requested = false;
  for (int round = 0; round < 64; ++round) {
    CRKIT_ASSIGN(auto members, members_of(r));
    size_t before = r.forwarded.size();
    for (pid_t p : members.pids) CRKIT_TRY(session.ask(p, req));
    for (pid_t h : session.helpers()) r.helpers.insert(h);
    if (!told_requested) {
      if (opts.on_requested) opts.on_requested(session.seq_of(req.requester));
      told_requested = true;
    }
    CRKIT_ASSIGN(auto replies, session.wait_replies(opts.deadline, keep_going));
    r.omitted.insert(replies.omitted.begin(), replies.omitted.end());
    if (replies.perm_fail) {
      for (pid_t p : members.pids) ::kill(p, SIGKILL);  // "checkpoint cancelled and job killed"
      return fail(replies.perm_fail,
                  fmt::format("a checkpoint callback failed permanently (code {}): the "
                              "checkpoint was cancelled and the processes killed",
                              replies.perm_fail));
    }
    if (replies.temp_fail)
      return fail(replies.temp_fail,
                  fmt::format("a checkpoint callback cancelled the checkpoint (code {})",
                              replies.temp_fail));
    for (const auto& f : replies.forwarded)
      if (std::find(r.forwarded.begin(), r.forwarded.end(), f) == r.forwarded.end())
        r.forwarded.push_back(f);
    if (r.forwarded.size() == before) {
      std::erase_if(members.pids, [&](pid_t q) { return r.omitted.count(q) > 0; });
      return members.pids;
    }
  }
  return fail(EINVAL, "checkpoint callbacks kept forwarding the request to more processes");
}

// Under --cow, pages of these mappings are read while the process is still frozen: the copy
// would not have them as they are (shared memory is shared with the running original, not
// copied; MADV_DONTFORK regions are missing in a fork, MADV_WIPEONFORK ones are zero).
bool read_while_frozen(const image::VmaRecord& v) {
  return (v.map_flags & MAP_SHARED) || (v.vm_flags & (image::kVmDontFork | image::kVmWipeOnFork));
}

// Saves the memory of every process. Without COW all of it is read from the frozen processes.
// With COW each process forks a snapshot of itself; what the snapshots cannot hold is read
// first, then the processes are released and the rest is read from the snapshots while they
// run. On return the snapshots are gone (killed and reaped).
Status dump_memory(inject::FrozenTree& tree, const std::vector<ProcessDump>& dumps,
                   image::ImageWriter& w, const resources::ProgressFn& progress,
                   const CheckpointOptions& opts, CheckpointStats& stats) {
  uint64_t total = 0, base = 0;
  for (const auto& d : dumps) total += d.memory.candidate_pages * 4096;
  resources::ProgressFn sub = [&](uint64_t done, uint64_t) {
    return !progress || progress(base + done, total);
  };
  auto save = [&](const std::vector<resources::CaptureRun>& runs) -> Status {
    CRKIT_ASSIGN(auto st, resources::dump_pages(runs, w, opts.pipeline, sub));
    for (const auto& r : runs) base += r.npages * 4096;
    stats.pages_written += st.pages_written;
    stats.zero_pages_skipped += st.zero_pages_skipped;
    stats.memory_bytes += st.raw_bytes;
    stats.stored_bytes += st.stored_bytes;
    stats.workers = std::max(stats.workers, st.workers);
    return {};
  };
  std::vector<resources::CaptureRun> frozen_runs, later_runs;
  if (!opts.cow) {
    for (const auto& d : dumps)
      for (const auto& r : resources::capture_runs(d.process.pid, d.process.pid, d.memory))
        frozen_runs.push_back(r);
    return save(frozen_runs);
  }
  std::vector<const inject::FrozenProcess*> frozen;
  for (const auto& p : tree.processes()) frozen.push_back(&p);
  auto forked = inject::CowCopy::fork_all(frozen);
  std::vector<inject::CowCopy> copies;
  copies.reserve(dumps.size());
  for (size_t i = 0; i < dumps.size(); ++i) {
    const auto& d = dumps[i];
    const pid_t pid = d.process.pid;
    pid_t source = pid;
    if (auto& copy = forked[i]; copy) {
      source = copy->pid();
      copies.push_back(std::move(*copy));
    } else {
      log::warn(
          "process {}: no copy-on-write snapshot ({}); its memory is saved while it is "
          "frozen",
          pid, copy.error().message);
    }
    // Runs and mappings are both in address order.
    auto v = d.memory.vmas.begin();
    for (const auto& r : resources::capture_runs(pid, source, d.memory)) {
      while (v != d.memory.vmas.end() && v->end <= r.start) ++v;
      const bool now = source == pid || (v != d.memory.vmas.end() && read_while_frozen(*v));
      (now ? frozen_runs : later_runs).push_back(r);
      if (now) frozen_runs.back().source = pid;
    }
  }
  CRKIT_TRY(save(frozen_runs));
  // Everything the image needs from the processes themselves is written: let them go on.
  tree.release();
  stats.cow = !copies.empty();
  stats.frozen_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stats.freeze_start).count();
  Status saved = save(later_runs);
  for (auto& c : copies)
    stats.reap_frozen_seconds = std::max(stats.reap_frozen_seconds, c.discard());
  return saved;
}

Result<Checkpoint> dump_request(const Request& r, image::ImageWriter& w,
                                const resources::ProgressFn& progress,
                                const std::function<bool()>& keep_going,
                                const resources::LibcrSession& session,
                                const CheckpointOptions& opts) {
  const Scope scope = r.scope;
  const pid_t id = r.id;
  const auto freeze_start = std::chrono::steady_clock::now();
  CRKIT_ASSIGN(FrozenScope frozen, freeze_scope(r, keep_going));
  if (session.any_gave_up())
    return fail(kCrETempFail,
                "a libcr process stopped waiting for this checkpoint (it heard "
                "nothing for too long)");
  // From here on, returning an error destroys `frozen`, which releases every process.
  for (const auto& z : frozen.zombies)
    log::warn(
        "process {} ({}) is a zombie (it exited and its parent {} has not reaped it): it "
        "is not saved; after a restart its parent's wait() will not report it",
        z.pid, z.comm, z.ppid);

  resources::SharedPagesSeen shared_seen;
  std::vector<ProcessDump> dumps;
  auto smaps = read_all_smaps(frozen.tree.pids());
  for (size_t i = 0; i < frozen.tree.processes().size(); ++i) {
    const auto& f = frozen.tree.processes()[i];
    if (!smaps[i]) return fail(smaps[i].error().context(fmt::format("process {}", f.pid())));
    auto d = dump_process_state(f, std::move(*smaps[i]), &shared_seen);
    if (!d) return fail(d.error().context(fmt::format("process {}", f.pid())));
    dumps.push_back(std::move(*d));
  }
  const std::vector<pid_t> pids = frozen.tree.pids();
  resources::SkipFds skip;
  skip.image_file = opts.image_file;
  for (pid_t p : pids)
    if (auto priv = session.private_fds(p); !priv.empty()) skip.by_pid[p] = std::move(priv);
  CRKIT_ASSIGN(auto files, resources::dump_files(pids, skip));

  CRKIT_TRY(w.write_file_header());
  CRKIT_TRY(w.write(image_info(scope, id, dumps)));
  Checkpoint c;
  c.stats.freeze_start = freeze_start;
  for (const auto& d : dumps) {
    CRKIT_TRY(w.write(d.process));
    for (const auto& th : d.threads) CRKIT_TRY(w.write(th));
    for (const auto& v : d.memory.vmas) CRKIT_TRY(w.write(v));
    for (const auto& f : files.fds)
      if (f.pid == d.process.pid) CRKIT_TRY(w.write(f));
    c.stats.threads += d.threads.size();
    c.stats.vmas += d.memory.vmas.size();
  }
  CRKIT_TRY(resources::write_file_contents(files, w));
  CRKIT_TRY(dump_memory(frozen.tree, dumps, w, progress, opts, c.stats));
  CRKIT_TRY(w.finish());

  c.pids = pids;
  c.frozen = std::move(frozen.tree);
  c.stats.processes = dumps.size();
  c.stats.fds = files.fds.size();
  c.stats.image_bytes = w.bytes_written();
  for (const auto& z : frozen.zombies) c.zombies.push_back(z.pid);
  return c;
}

}  // namespace

Result<Checkpoint> checkpoint(Scope scope, pid_t id, image::ImageWriter& w,
                              const resources::ProgressFn& progress,
                              const CheckpointOptions& opts) {
  // The progress callback doubles as the cancellation check while threads are stopping.
  std::function<bool()> keep_going;
  if (progress) keep_going = [&progress]() { return progress(0, 0); };
  Request r{scope, id, {}, {}};
  resources::LibcrSession session;
  auto failed = [&](const Error& e) {
    session.finish(libcr::kOutcomeFailed, e.code, opts.deadline);
    return e;
  };
  auto left = run_callbacks(r, session, opts, keep_going);
  if (!left) return fail(failed(left.error()));
  if (left->empty() && !r.omitted.empty())
    return fail(
        failed(Error{ESRCH, fmt::format("no processes checkpointed: all {} of {} {} "
                                        "were omitted by libcr",
                                        r.omitted.size(), resources::scope_name(scope), id)}));
  // libcr processes wait for the outcome meanwhile: they see that we are alive.
  std::function<bool()> beat_and_go = [&]() {
    session.heartbeat();
    return !keep_going || keep_going();
  };
  resources::ProgressFn beat_progress = [&](uint64_t done, uint64_t total) {
    session.heartbeat();
    return !progress || progress(done, total);
  };
  auto c = dump_request(r, w, beat_progress, beat_and_go, session, opts);
  if (!c) return fail(failed(c.error()));
  c->libcr = std::move(session);
  c->omitted.assign(r.omitted.begin(), r.omitted.end());
  return c;
}

}  // namespace crkit::engine
