// Command lines of cr_mpirun, cr_mpirestart and cr_snapshot, parsed into structs (no I/O, no
// exit), so that the tools' mains stay small and the parsing is unit-tested.
//
// A parse error is an Error with code EINVAL and a message without the program name; the tool
// prints it with its usage and exits with its usage status.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "protocol/channel.hpp"
#include "snapshot/placement.hpp"

namespace crkit::mpi_tools {

enum class Action { Run, Help, Version };

// What cr_mpirun and cr_mpirestart share: where the job runs, how agents are launched, which
// coordinator follows it, and where its snapshots go.
struct JobOptions {
  std::string hostfile;                            // --hostfile/-f; empty: not given
  std::vector<coord::HostSlot> hosts;              // --hosts, parsed; empty: not given
  std::vector<std::string> launcher{"ssh", "-x"};  // --launcher split on spaces; empty: none
  std::string checkpoint_dir;            // --checkpoint-dir, made absolute; empty: the default
  unsigned interval = 0;                 // --checkpoint-interval SEC, 0 = none
  unsigned keep = 0;                     // --keep K, 0 = keep all
  std::string job;                       // --job NAME; empty: the tool's pid
  std::optional<coord::Endpoint> coord;  // --coord: an existing cr_coordd; else a private one
  std::string coord_host;                // --coord-host: the name agents reach us by
  std::string
      token_file;  // --token-file: the --coord coordinator's token (else $CRKIT_COORD_TOKEN)
  bool verbose = false;
};

struct MpirunOptions {
  Action action = Action::Run;
  JobOptions job;
  int nranks = 0;  // -n/-np, required
  int ppn = 0;     // --ppn, 0 = fill hosts by slots
  bool nolocal = false;
  std::vector<std::string> env_exclude;
  std::vector<std::string> argv;  // PROGRAM ARGS...
};

struct MpirestartOptions {
  Action action = Action::Run;
  JobOptions job;
  std::string snapshot;  // a snapshot directory or its manifest.json
  bool verify = true;    // --no-verify: skip hashing the images
  bool pid_namespace_always = false;
};

struct SnapshotOptions {
  enum class Mode { Snapshot, Status, List };
  Action action = Action::Run;
  Mode mode = Mode::Snapshot;
  bool term = false;
  unsigned timeout = 600;  // seconds, 0 = no limit
  bool json = false;
  bool verbose = false;
  std::optional<coord::Endpoint> coord;
  std::string token_file;  // --token-file (else the job's record; with --coord, $CRKIT_COORD_TOKEN)
  std::string job;
};

// args[0] is the program name. cwd makes --checkpoint-dir absolute.
Result<MpirunOptions> parse_mpirun_args(const std::vector<std::string>& args,
                                        const std::string& cwd);
Result<MpirestartOptions> parse_mpirestart_args(const std::vector<std::string>& args,
                                                const std::string& cwd);
Result<SnapshotOptions> parse_snapshot_args(const std::vector<std::string>& args);

// dir made absolute against cwd, without "." components, repeated or trailing slashes.
std::string absolute_path(const std::string& dir, const std::string& cwd);

}  // namespace crkit::mpi_tools
