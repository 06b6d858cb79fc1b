// BLCR's "signal after checkpoint/restart" options (--run, --stop, --term, --abort, --kill,
// --cont, -S N), shared by cr_checkpoint and cr_restart.
#pragma once

#include <signal.h>

#include <cstdlib>
#include <string>

namespace crkit::tools {

// getopt_long codes of the signal options; both tools list them in their option tables.
enum SignalOption {
  kOptRun = 2000,
  kOptStop,
  kOptTerm,
  kOptAbort,
  kOptKill,
  kOptCont,
  kOptEarlyStop,
  kOptEarlyAbrt,
};

// The signal a signal option selects (0 for --run), or -1 for any other option.
inline int signal_of_option(int opt) {
  switch (opt) {
    case kOptRun:
      return 0;
    case kOptStop:
    case kOptEarlyStop:
      return SIGSTOP;
    case kOptTerm:
      return SIGTERM;
    case kOptAbort:
    case kOptEarlyAbrt:
      return SIGABRT;
    case kOptKill:
      return SIGKILL;
    case kOptCont:
      return SIGCONT;
    default:
      return -1;
  }
}

// Parses -S/--signal N; returns false when N is outside 1.._NSIG-1.
inline bool parse_signal_number(const char* s, int* out) {
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (!end || *end || v < 1 || v >= _NSIG) return false;
  *out = static_cast<int>(v);
  return true;
}

}  // namespace crkit::tools
