// Freezing a process: every thread seized (PTRACE_SEIZE) and stopped (PTRACE_INTERRUPT).
// The RAII owner detaches on destruction, so an error path never leaves a target stopped or
// traced.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <vector>

#include "common/result.hpp"

namespace crkit::inject {

class FrozenProcess {
 public:
  // Seizes and stops all threads of pid. Fails with ESRCH (no such process), EPERM (not
  // ours to trace), CR_EPTRACED (already traced by someone else).
  // keep_going, when given, is polled while waiting for threads to stop; when it returns
  // false the freeze gives up with ETIMEDOUT (e.g. a thread parked in vfork()).
  static Result<FrozenProcess> freeze(pid_t pid, const std::function<bool()>& keep_going = {});

  FrozenProcess(FrozenProcess&&) noexcept;
  FrozenProcess& operator=(FrozenProcess&&) = delete;
  FrozenProcess(const FrozenProcess&) = delete;
  ~FrozenProcess();

  pid_t pid() const { return pid_; }
  const std::vector<pid_t>& tids() const { return tids_; }
  bool was_stopped() const { return was_stopped_; }
  // Signals dequeued from a thread while we were stopping it (siginfo blobs). They belong to
  // the checkpoint as pending signals and are re-queued to the thread before it is released.
  const std::map<pid_t, std::vector<std::vector<uint8_t>>>& stashed_signals() const {
    return stashed_;
  }

  // Gives back the signals taken out while freezing (remote calls; every thread must still be
  // stopped). release() does it too; calling it first for every process of a tree lets the
  // release itself be quick.
  Status requeue_stashed();
  // Detaches every thread; the process continues (or stays stopped if it was before).
  void release();
  // Kills the process while it is still frozen and waits until it is dead.
  void kill_frozen();

 private:
  FrozenProcess() = default;
  pid_t pid_ = 0;
  std::vector<pid_t> tids_;
  bool was_stopped_ = false;
  bool attached_ = false;
  bool frozen_ = false;  // every thread reached its stop (remote calls are possible)
  std::map<pid_t, std::vector<std::vector<uint8_t>>> stashed_;
};

// All processes of one checkpoint: frozen one by one, released (or killed) together.
class FrozenTree {
 public:
  FrozenTree() = default;
  FrozenTree(FrozenTree&&) = default;
  FrozenTree& operator=(FrozenTree&&) = default;
  ~FrozenTree() { release(); }

  void add(FrozenProcess p) { procs_.push_back(std::move(p)); }
  bool contains(pid_t pid) const;
  std::vector<FrozenProcess>& processes() { return procs_; }
  const std::vector<FrozenProcess>& processes() const { return procs_; }
  std::vector<pid_t> pids() const;
  // Puts the processes in this order; any not listed is released now.
  void keep_only(const std::vector<pid_t>& order);

  // Every process continues (stopped ones stay stopped): signals are given back to all of
  // them first, then all are detached.
  void release();
  // Every process is killed while frozen; returns once all are dead.
  void kill_frozen();

 private:
  std::vector<FrozenProcess> procs_;
};

}  // namespace crkit::inject
