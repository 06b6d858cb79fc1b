// Starting and following a coordinated MPI job: what cr_mpirun and cr_mpirestart share.
//
// The tool finds (or starts) a cr_coordd, submits the job, registers it for cr_snapshot, runs
// one cr_agent per node through the launcher (ssh by default), and then waits for the job to
// end while it watches the launchers and its own signals. The job's exit code becomes the
// tool's exit status.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "protocol/channel.hpp"
#include "snapshot/placement.hpp"
#include "tools/tool_options.hpp"

namespace crkit::mpi_tools {

// The programs that come with this one: its directory holds cr_coordd and cr_agent.
struct Programs {
  std::string bindir;
  std::string coordd;
  std::string agent;
};
Result<Programs> find_programs();

// The job's environment: envp minus PMI_* (a launcher around us must not leak its PMI
// connection into the job) and minus the excluded names (exact, or a prefix when the name ends
// in '*'), plus MPIR_CVAR_NEMESIS_ENABLE_CKPOINT=1, and MPIR_CVAR_NOLOCAL=1 when nolocal.
std::map<std::string, std::string> job_environment(const char* const* envp,
                                                   const std::vector<std::string>& exclude,
                                                   bool nolocal);

// gethostname(), "" if it fails.
std::string own_hostname();
// Whether host names this machine: "localhost", a loopback address, or the host name (also
// when one of the two is the other's first component: "node1" and "node1.cluster").
bool is_local_host(const std::string& host, const std::string& own);

// word quoted for a POSIX shell when it holds anything but [A-Za-z0-9_./:@%+=,-].
std::string shell_quote(const std::string& word);

// The command that starts node `node`'s agent: `agent --coord EP --job JOB --node K`, run
// directly when launcher is empty or local is true, else `LAUNCHER... HOST` followed by that
// command quoted for the remote shell (ssh joins its arguments into one shell command line).
std::vector<std::string> agent_command(const std::vector<std::string>& launcher,
                                       const std::string& host, bool local,
                                       const std::string& agent, const std::string& coord_ep,
                                       const std::string& job, int node);

// The hosts of --hostfile or --hosts; empty when neither was given.
Result<std::vector<coord::HostSlot>> load_hosts(const JobOptions& o);

// What is submitted: the SPEC of coord/protocol/messages.md.
struct JobSpec {
  std::string job;
  int nranks = 0;
  std::vector<coord::NodePlan> nodes;
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  std::string cwd;
  std::string checkpoint_dir;
  unsigned keep = 0;
  unsigned interval = 0;
  bool nolocal = false;
  std::string restart_manifest;  // absolute path; empty: a fresh launch
  bool pid_namespace_always = false;
  std::string mpi;  // for the manifest, see describe_mpi()
};
coord::Json spec_json(const JobSpec& s);

// Which MPICH the ranks will load: the first libmpich.so.12 on the job's LD_LIBRARY_PATH
// whose prefix has bin/mpichversion ("MPICH 4.0.2 ch3:nemesis"), else the system's. Sets
// `warning` when that library cannot checkpoint (not ch3:nemesis, e.g. Debian's ch4:ucx).
std::string describe_mpi(const std::map<std::string, std::string>& env, std::string* warning);

// Runs the job to its end (see the top of this file) and returns the tool's exit status: the
// job's exit code; 128+N when signal N (SIGINT, SIGTERM, SIGHUP) stopped it; the errno of a
// failure to start or follow it (low 8 bits), after a message. `tool` names the program in
// messages.
int run_job(const JobOptions& o, const Programs& programs, const JobSpec& spec,
            const std::string& tool);

}  // namespace crkit::mpi_tools
