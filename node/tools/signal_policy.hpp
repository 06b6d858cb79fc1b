// BLCR's "signal after checkpoint/restart" options (--run, --stop, --term, --abort, --kill,
// --cont, -S N), shared by cr_checkpoint and cr_restart.
#pragma once

#include <signal.h>

#include <cstdlib>
#include <string>

namespace crkit::tools {

struct SignalPolicy {
  int signal = 0;  // 0 = --run (none)
};

// Parses -S/--signal N; returns false when N is outside 1.._NSIG-1.
inline bool parse_signal_number(const char* s, int* out) {
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (!end || *end || v < 1 || v >= _NSIG) return false;
  *out = static_cast<int>(v);
  return true;
}

}  // namespace crkit::tools
