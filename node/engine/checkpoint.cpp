#include "engine/checkpoint.hpp"

#include <signal.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <ctime>

#include <fmt/format.h>

#include "common/log.hpp"
#include "engine/remote_scratch.hpp"
#include "proc/proc.hpp"
#include "resources/files.hpp"
#include "resources/process.hpp"
#include "resources/threads.hpp"

namespace crkit::engine {

Result<pid_t> resolve_scope(Scope scope, pid_t id) {
  if (id <= 0) return fail(ESRCH, fmt::format("invalid process id {}", id));
  if (::kill(id, 0) < 0 && errno == ESRCH)
    return fail(ESRCH, fmt::format("process {} does not exist", id));
  if (scope == Scope::Proc || scope == Scope::Tree) {
    // A user may checkpoint only what they could ptrace; say so before anything else.
    auto st = proc::read_status(id);
    if (!st) return fail(st.error());
    uid_t me = ::getuid();
    if (::geteuid() != 0 && (st->uid[0] != me || st->uid[1] != me || st->uid[2] != me))
      return fail(
          EPERM,
          fmt::format("cannot checkpoint process {}: it belongs to uid {} and you are uid {} "
                      "(Operation not permitted)",
                      id, st->uid[1], me));
  }
  switch (scope) {
    case Scope::Proc:
      return id;
    case Scope::Tree: {
      CRKIT_ASSIGN(auto kids, proc::list_children(id));
      if (!kids.empty())
        return fail(
            ENOSYS,
            fmt::format(
                "process {} has children ({}{}); checkpointing a process tree is not supported "
                "yet: use -p/--pid to checkpoint process {} alone",
                id, kids.front(), kids.size() > 1 ? ", ..." : "", id));
      return id;
    }
    case Scope::Pgrp:
    case Scope::Sess: {
      // Only a group/session of exactly one process is supported for now.
      CRKIT_ASSIGN(auto all, proc::list_numeric_dir("/proc"));
      std::vector<pid_t> members;
      for (pid_t p : all) {
        auto st = proc::read_stat(p);
        if (!st) continue;
        if ((scope == Scope::Pgrp ? st->pgrp : st->session) == id) members.push_back(p);
      }
      const char* what = scope == Scope::Pgrp ? "process group" : "session";
      if (members.empty()) return fail(ESRCH, fmt::format("{} {} has no processes", what, id));
      if (members.size() > 1)
        return fail(
            ENOSYS,
            fmt::format(
                "{} {} has {} processes; checkpointing several processes is not supported yet",
                what, id, members.size()));
      return members.front();
    }
  }
  return fail(EINVAL, "unknown scope");
}

Result<Checkpoint> checkpoint_process(pid_t pid, Scope scope, image::ImageWriter& w,
                                      const resources::ProgressFn& progress) {
  // The progress callback doubles as the cancellation check while threads are stopping.
  std::function<bool()> keep_going;
  if (progress) keep_going = [&progress]() { return progress(0, 0); };
  CRKIT_ASSIGN(inject::FrozenProcess frozen, inject::FrozenProcess::freeze(pid, keep_going));
  // From here on, returning an error destroys `frozen`, which releases the target.
  CRKIT_ASSIGN(auto smaps, proc::read_smaps(pid));
  CRKIT_ASSIGN(uint64_t site, inject::find_syscall_site(pid));
  inject::RemoteCaller main(pid, site);
  CRKIT_ASSIGN(RemoteScratch scratch, RemoteScratch::map(pid, main));
  resources::DumpTarget t{pid, frozen.tids(), site, &main, &scratch};

  auto collect =
      [&]() -> Result<std::tuple<image::ProcessRecord, std::vector<image::ThreadRecord>>> {
    CRKIT_ASSIGN(auto p, resources::dump_process(t));
    p.was_stopped = frozen.was_stopped() ? 1 : 0;
    CRKIT_ASSIGN(auto threads, resources::dump_threads(t, frozen.stashed_signals()));
    return std::make_tuple(std::move(p), std::move(threads));
  };
  auto collected = collect();
  // smaps was read before the scratch area existed, so the plan does not include it.
  resources::RemoteAccess remote{&main, &scratch};
  auto planned = collected ? resources::plan_memory(pid, smaps, &remote)
                           : Result<resources::MemoryPlan>(fail(collected.error()));
  // The scratch area must go before memory is read or the target released.
  Status unmapped = scratch.unmap(main);
  if (!collected) return fail(collected.error());
  if (!planned) return fail(planned.error());
  if (!unmapped) return fail(unmapped.error());
  auto& [proc_rec, threads] = *collected;
  auto& plan = *planned;

  CRKIT_ASSIGN(auto files, resources::dump_files(pid));

  image::ImageInfo info;
  info.page_size = static_cast<uint32_t>(::sysconf(_SC_PAGESIZE));
  info.xsave_size = threads.empty() ? 0 : static_cast<uint32_t>(threads.front().xstate.size());
  info.xfeatures = threads.empty() ? 0 : inject::xstate_features(threads.front().xstate);
  info.created_unix = static_cast<int64_t>(::time(nullptr));
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  info.hostname = host;
  struct utsname u {};
  ::uname(&u);
  info.kernel_release = u.release;
  info.crkit_version = CRKIT_VERSION;
  info.scope = static_cast<uint32_t>(scope);
  info.target = pid;
  info.process_count = 1;

  CRKIT_TRY(w.write_file_header());
  CRKIT_TRY(w.write(info));
  CRKIT_TRY(w.write(proc_rec));
  for (const auto& th : threads) CRKIT_TRY(w.write(th));
  for (const auto& v : plan.vmas) CRKIT_TRY(w.write(v));
  for (const auto& f : files.fds) CRKIT_TRY(w.write(f));
  CRKIT_TRY(resources::write_file_contents(files, w));
  CRKIT_ASSIGN(auto mstats, resources::write_memory_pages(pid, plan, w, progress));
  CRKIT_TRY(w.finish());

  Checkpoint c{std::move(frozen), {}};
  c.stats.threads = threads.size();
  c.stats.vmas = plan.vmas.size();
  c.stats.pages_written = mstats.pages_written;
  c.stats.zero_pages_skipped = mstats.zero_pages_skipped;
  c.stats.fds = files.fds.size();
  c.stats.image_bytes = w.bytes_written();
  return c;
}

}  // namespace crkit::engine
