// Stand-ins: the processes a restart creates with the image's PIDs. Each runs ordinary code
// first - it creates its own children (so parents, sessions and groups come back), calls
// setsid() if it led a session, installs its file descriptors and process attributes - then
// reports to cr_restart and waits to be seized and transplanted (restart.cpp).
//
// Orphans (processes whose parent is not in the image) are created by short-lived helper
// processes, which cr_restart kills before the release: the orphans end up as children of
// init, as they were.
//
// Everything a stand-in needs is inherited through fork() from the process that creates the
// top of the tree: the loaded image, the plan, and every open file description of the image
// (OpenFiles), so that descriptors shared between processes are shared again.
//
// Report channel: a SOCK_SEQPACKET socket pair. Each message carries the sender's
// credentials (SCM_CREDENTIALS), which tell cr_restart the sender's PID as cr_restart sees
// it, also when the tree lives in a new PID namespace.
//   "OK <index> <report fd> <n> (<dev> <ino> <fd>){n}"   a stand-in is ready; the fds of the
//                                                        shared memory objects it holds
//   "HELPER <creator index|-1> <pid>"                    a helper has made its orphans
//   "ERR <index|-1> <errno> <message>"                   a step failed
// A stand-in that reads end of file on the channel (cr_restart is gone) exits.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "engine/loaded_image.hpp"
#include "resources/context.hpp"
#include "resources/files.hpp"
#include "resources/process_tree.hpp"

namespace crkit::engine {

struct StandinContext {
  const LoadedImage* img = nullptr;
  const resources::TreePlan* plan = nullptr;
  const resources::OpenFiles* files = nullptr;      // set by create_top_level
  const resources::RestoreTarget* paths = nullptr;  // relocation of saved paths
  int report_fd = -1;                               // the stand-ins' end of the report channel
  int restorer_fd = -1;                             // cr_restart's end: closed in every stand-in
  bool root_as_sibling = false;  // the root is made with CLONE_PARENT (cr_request_restart)
};

// Runs in the process that creates the top of the tree (cr_restart, or the init of a new
// PID namespace): opens every file description and shared memory object of the image, then
// creates the root stand-in and, if there are orphans outside any restored session, the
// top-level helper. The opened files are closed again before it returns.
struct TopLevel {
  pid_t root = -1;
  pid_t helper = -1;
};
Result<TopLevel> create_top_level(StandinContext c);

// One message of the report channel, as cr_restart reads it.
struct Report {
  enum Kind { Ok, Helper, Err, Released } kind = Err;
  int index = -1;  // process index (Ok, Err) or creator index (Helper; -1 = top level)
  pid_t real = 0;  // the sender's pid as the reader sees it (from its credentials)
  pid_t vpid = 0;  // Helper: its pid as the tree sees it
  int report_fd = -1;
  std::map<resources::ShmKey, long> shm_fds;
  Error error;
};
// Reads one message. ENODATA at end of file (every stand-in is gone).
Result<Report> read_report(int restorer_fd);
// Lets the reader receive the senders' credentials.
Status enable_credentials(int restorer_fd);

// Sends an error on the report channel (from a stand-in, a helper or the namespace's init).
void report_error(int report_fd, int index, const Error& e);

// Closes every descriptor of the calling process except those in keep.
void close_all_fds_except(std::vector<int> keep);

// clone3() with a chosen PID (want > 0) and exit signal; returns as fork() does.
pid_t clone_with_pid(uint64_t flags, pid_t want, int exit_signal);
// The error for a failed clone with a chosen PID: EBUSY naming it when it is in use.
Error clone_error(int e, pid_t want);

}  // namespace crkit::engine
