// The one piece of memory libcr and a checkpoint requester share: a page-aligned block in a
// memfd named "crkit-libcr" that libcr maps MAP_SHARED and keeps open. A requester that may
// ptrace the process takes the fd with pidfd_getfd and maps it too; a restart writes into the
// restored copy. All fields are plain integers used with atomic builtins, so that this header
// is shared by libcr (no C++ runtime) and the engine. Futexes are process-shared.
//
// One request, as the sequence numbers go (seq = req_seq after the requester bumps it):
//   requester: claim = its pid and seq (CAS from 0; EBUSY if a live requester holds it),
//              fills req_*, req_seq = seq, sends CR_SIGNUM with sival_int = seq;
//   libcr:     runs the callbacks until each reaches cr_checkpoint(), then reply_* and
//              reply_seq = seq (futex wake);
//   requester: dumps (or not), then outcome_* and outcome_seq = seq (futex wake);
//              a restart sets outcome RESTARTED in the restored copy instead;
//   libcr:     cr_checkpoint() returns, callbacks finish, done_seq = seq (futex wake);
//   requester: claim = 0.
// The memfd is sealed against resizing (F_SEAL_SHRINK|GROW|SEAL): a requester maps it only
// when it is, so no process can make the requester fault by truncating it.
#pragma once

#include <stdint.h>

namespace crkit::libcr {

inline constexpr uint32_t kControlMagic = 0x6c43726b;  // "krCl"
inline constexpr uint32_t kControlVersion = 1;
inline constexpr const char kControlName[] = "crkit-libcr";  // memfd name
inline constexpr int kSignal = 64;                           // CR_SIGNUM (SIGRTMAX)

enum Kind : uint32_t {
  kKindFull = 1,  // libcr.so: callbacks, critical sections (signalled)
  kKindRun = 2,   // libcr_run.so: nothing to run in the process (dumped as it is)
  kKindOmit = 3,  // libcr_omit.so: always left out of checkpoints
};

enum Reply : int32_t {
  kReplyNone = 0,
  kReplyReady = 1,     // every callback reached cr_checkpoint(); dump it
  kReplyOmit = 2,      // leave this process out
  kReplyTempFail = 3,  // cancel the request (reply_value: user code or 0)
  kReplyPermFail = 4,  // cancel the request and kill the job (reply_value: user code or 0)
};

enum Outcome : int32_t {
  kOutcomeNone = 0,
  kOutcomeContinue = 1,   // dumped; cr_checkpoint() returns 0
  kOutcomeRestarted = 2,  // this is a restarted copy; cr_checkpoint() returns restart_requester
  kOutcomeFailed = 3,     // not dumped; cr_checkpoint() returns -outcome_value
  kOutcomeOmitted = 4,    // left out; cr_checkpoint() returns -CR_EOMITTED
};

inline constexpr int kMaxForwards = 32;
inline constexpr int kMaxPrivateFds = 64;
inline constexpr int kMaxHelpers = 64;
inline constexpr int kPathMax = 4096;

struct ControlForward {
  int32_t scope;
  int32_t pid;
};

struct alignas(4096) ControlBlock {
  uint32_t magic;
  uint32_t version;
  uint32_t kind;  // Kind
  int32_t pid;    // the process that owns this block (a fork child makes its own)

  // The requester holding the block for one request: its pid | the request number it uses
  // << 32 (so that a finished request's holder is told from a fresh one); 0 if free.
  uint64_t claim;
  uint32_t heartbeat;  // bumped by that requester while it works (it may be in another PID
                       // namespace, where its pid means nothing)
  uint32_t pad0;

  uint32_t req_seq;
  int32_t req_requester;  // pid reported by cr_get_checkpoint_info()
  int32_t req_target;
  int32_t req_scope;  // cr_scope_t
  int32_t req_signal;
  uint32_t req_flags;
  char req_dest[kPathMax];

  uint32_t reply_seq;
  int32_t reply_code;   // Reply
  int32_t reply_value;  // user code of a *_FAILURE_CODE(v)
  uint32_t n_forwards;  // cr_forward_checkpoint() additions
  ControlForward forwards[kMaxForwards];

  uint32_t outcome_seq;
  int32_t outcome_code;   // Outcome
  int32_t outcome_value;  // error code (kOutcomeFailed)
  int32_t restart_requester;
  char restart_src[kPathMax];

  uint32_t done_seq;

  // Descriptors that are libcr's own (request handles): not saved; libcr remakes them.
  uint32_t n_private_fds;
  int32_t private_fds[kMaxPrivateFds];

  // libcr's helper processes (the cr_checkpoint/cr_restart of its requests, 0 = free slot):
  // not members of anyone's checkpoint.
  int32_t helpers[kMaxHelpers];
};

}  // namespace crkit::libcr
