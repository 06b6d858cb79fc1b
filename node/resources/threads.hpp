// Threads: registers (general, FPU/SSE/AVX, fs_base), blocked and pending signals,
// sigaltstack, robust list, clear-tid address, rseq, name, credentials. Dump and restore side
// by side.
#pragma once

#include <vector>

#include "common/result.hpp"
#include "image/schema.hpp"
#include "resources/context.hpp"

namespace crkit::resources {

// stashed: signals the freezer took out of a thread while stopping it (tid -> siginfo blobs).
Result<std::vector<image::ThreadRecord>> dump_threads(
    const DumpTarget& t, const std::map<pid_t, std::vector<std::vector<uint8_t>>>& stashed);

// Unregisters the stand-in's own rseq area (glibc registered it) before its memory goes.
Status unregister_standin_rseq(RestoreTarget& t);

// Creates the non-main threads with their saved TIDs (clone3 set_tid) and fills
// t.real_tid_of. The new threads are stopped and traced.
Status create_threads(RestoreTarget& t, const std::vector<image::ThreadRecord>& threads);

// Kernel-side per-thread state set by the thread itself (remote calls in that thread):
// clear-tid address, robust list, rseq, sigaltstack, name, pending signals.
Status restore_thread_state(RestoreTarget& t, const image::ThreadRecord& th);

// Credentials and capabilities: never more than the restarter holds. Done last, because
// dropping capabilities ends our ability to choose TIDs.
// Also the capability bounding set and no_new_privs.
Status restore_thread_creds(RestoreTarget& t, const image::ThreadRecord& th,
                            const image::ProcessRecord& p);

// Registers, FPU state and blocked mask, with interrupted system calls set up to re-run.
Status restore_thread_registers(RestoreTarget& t, const image::ThreadRecord& th);

}  // namespace crkit::resources
