// Processes with libcr in them (libcr/control_block.h). Dump and restore side by side.
//
// Dump: before anything is frozen, every libcr process of the request is asked through its
// control block and CR_SIGNUM; its callbacks run until they reach cr_checkpoint() and it
// replies ready, omit, or fail. After the dump each is told the outcome (continue, failed) and
// the requester waits until its callbacks have returned. libcr_run processes need nothing;
// libcr_omit processes are left out. libcr's own descriptors are not saved.
// Restore: the restored copy of a control block is told "restarted" before the process runs,
// so that cr_checkpoint() returns > 0 in it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "image/schema.hpp"
#include "resources/process_tree.hpp"

namespace crkit::libcr {
struct ControlBlock;
}

namespace crkit::resources {

struct LibcrRequest {
  pid_t requester = 0;  // reported by cr_get_checkpoint_info()
  pid_t target = 0;
  Scope scope = Scope::Tree;
  int signal = 0;
  std::string dest;  // canonical path of the context file, "" if none
};

using Deadline = std::optional<std::chrono::steady_clock::time_point>;

// A cr_forward_checkpoint() addition, and the process that asked for it (whose rights it
// gets: the block is the process's to write).
struct LibcrForward {
  Scope scope;
  pid_t id;
  pid_t from;
  bool operator==(const LibcrForward&) const = default;
};

// What the callbacks decided, over all processes asked.
struct LibcrReplies {
  std::set<pid_t> omitted;
  std::vector<LibcrForward> forwarded;
  int temp_fail = 0;  // error code (CR_ETEMPFAIL or a user code), 0 if none
  int perm_fail = 0;  // same for a permanent failure
};

// The libcr processes of one checkpoint request. Destroying it before finish() tells every
// process that waits that the checkpoint failed (CR_ETEMPFAIL), so no process is left waiting.
class LibcrSession {
 public:
  LibcrSession() = default;
  LibcrSession(LibcrSession&&) noexcept;
  LibcrSession& operator=(LibcrSession&&) noexcept;
  ~LibcrSession();

  // Looks at pid: a full libcr process gets the request (EBUSY if another requester holds
  // it); a libcr_omit one is recorded as omitted. Processes without libcr are left alone.
  Status ask(pid_t pid, const LibcrRequest& req);
  bool asked(pid_t pid) const;
  // The request's sequence number in pid's control block, 0 if pid was not asked.
  uint32_t seq_of(pid_t pid) const;

  // Waits for every asked process to reply (ETIMEDOUT at the deadline; EINTR when
  // keep_going() says stop). Omitted ones are told so and go on at once.
  Result<LibcrReplies> wait_replies(const Deadline& deadline,
                                    const std::function<bool()>& keep_going);

  // Tells the processes that the requester is alive (call at least every few seconds while
  // they wait).
  void heartbeat();

  // The helper processes of the asked processes' own requests: never members.
  std::set<pid_t> helpers() const;
  // Whether a process stopped waiting (it thought us gone): the checkpoint must not go on.
  bool any_gave_up() const;

  // libcr's own descriptors of pid: not saved.
  std::set<int> private_fds(pid_t pid) const;

  // Tells every waiting process the outcome: outcome is libcr::Outcome, value an error code
  // for failures. Then waits (until the deadline) for their callbacks to return.
  void finish(int outcome, int value, const Deadline& deadline);

 private:
  struct Peer {
    pid_t pid = 0;
    libcr::ControlBlock* cb = nullptr;
    uint32_t seq = 0;
    uint64_t claim = 0;  // what we put in the block's claim word
    bool replied = false, told = false;
  };
  void tell(Peer& p, int outcome, int value);
  void release();
  std::vector<Peer> peers_;
  std::set<pid_t> omitted_;
};

// Restore: marks the restored control block of a process (found among its shared memory
// mappings) restarted, naming the requester of the restart and the context file.
Status mark_restarted(pid_t real_pid, std::span<const image::VmaRecord> vmas, pid_t requester,
                      const std::string& src);

}  // namespace crkit::resources
