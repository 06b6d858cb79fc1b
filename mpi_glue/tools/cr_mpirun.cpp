// cr_mpirun: launch an MPI job whose global snapshots crkit can take (cr_snapshot) and restart
// (cr_mpirestart) — mpiexec with coordinated checkpointing.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "tools/job_launch.hpp"
#include "tools/tool_options.hpp"

extern char** environ;

namespace {

using namespace crkit::mpi_tools;

constexpr int kUsageExit = 2;

void usage(FILE* f) {
  std::fprintf(
      f,
      "Usage: cr_mpirun [options] PROGRAM [ARGS...]\n"
      "\n"
      "Runs PROGRAM as an MPI job of N ranks whose coordinated snapshots are taken with\n"
      "cr_snapshot JOB and restarted with cr_mpirestart SNAPSHOT. Options end at PROGRAM.\n"
      "\n"
      "Ranks and hosts:\n"
      "  -n, -np N               number of ranks (required)\n"
      "  -f, --hostfile FILE     hosts, one a line: 'host', 'host:N' or 'host slots=N'\n"
      "      --hosts LIST        hosts as 'a,b:2,c' (default: localhost with N slots)\n"
      "      --ppn K             K ranks per host (default: fill each host to its slots)\n"
      "      --launcher CMD      how agents start on other hosts: CMD HOST COMMAND\n"
      "                          (default 'ssh -x'; 'none': run them here, for any host)\n"
      "Snapshots:\n"
      "      --checkpoint-dir DIR   snapshots go to DIR/JOB/snap-N\n"
      "                             (default: ./crkit-snapshots)\n"
      "      --checkpoint-interval SEC  take one every SEC seconds (default 0: on request)\n"
      "      --keep K            keep the newest K snapshots (default 0: keep all)\n"
      "      --job NAME          the job's name for cr_snapshot (default: this pid)\n"
      "Coordinator:\n"
      "      --coord HOST:PORT   use this cr_coordd (default: start a private one)\n"
      "      --coord-host H      the name the nodes reach this host by (default: hostname)\n"
      "      --token-file FILE   the --coord coordinator's token (see cr_coordd --help;\n"
      "                          default: $CRKIT_COORD_TOKEN)\n"
      "Environment (the job gets ours, without PMI_*):\n"
      "      --env-exclude VAR   leave VAR out (repeatable; 'VAR*' leaves out a prefix)\n"
      "      --nolocal           all MPI traffic over TCP, also within a host\n"
      "                          (sets MPIR_CVAR_NOLOCAL=1)\n"
      "Other:\n"
      "  -v, --verbose           print progress: coordinator, job id, nodes launched\n"
      "  -h, -?, --help          this help\n"
      "      --version           print the version\n"
      "Exit status: the job's exit code; 128+N when signal N stopped cr_mpirun (the job is\n"
      "killed); 2 on bad usage; otherwise the errno of the failure (e.g. 22 EINVAL: the\n"
      "hosts cannot hold N ranks).\n");
}

}  // namespace

int main(int argc, char** argv) {
  crkit::log::set_program("cr_mpirun");
  char* cwd_c = ::get_current_dir_name();  // $PWD when it is accurate: the path users know
  if (!cwd_c) {
    std::perror("cr_mpirun: getcwd");
    return EXIT_FAILURE;
  }
  const std::string cwd = cwd_c;
  std::free(cwd_c);

  auto parsed = parse_mpirun_args(std::vector<std::string>(argv, argv + argc), cwd);
  if (!parsed) {
    std::fprintf(stderr, "cr_mpirun: %s\n", parsed.error().message.c_str());
    usage(stderr);
    return kUsageExit;
  }
  MpirunOptions& o = *parsed;
  if (o.action == Action::Help) {
    usage(stdout);
    return 0;
  }
  if (o.action == Action::Version) {
    std::printf("cr_mpirun (crkit) %s\n", CRKIT_VERSION);
    return 0;
  }
  if (o.job.verbose) crkit::log::set_threshold(crkit::log::Level::Verbose);

  auto hosts = load_hosts(o.job);
  if (!hosts) {
    crkit::log::error("{}", hosts.error().message);
    return crkit::exit_code_of(hosts.error().code);
  }
  if (hosts->empty()) hosts->push_back({"localhost", o.nranks});
  auto plan = crkit::coord::plan_launch(o.nranks, *hosts, o.ppn);
  if (!plan) {
    crkit::log::error("{}", plan.error().message);
    return crkit::exit_code_of(plan.error().code);
  }
  auto programs = find_programs();
  if (!programs) {
    crkit::log::error("{}", programs.error().message);
    return crkit::exit_code_of(programs.error().code);
  }

  JobSpec spec;
  spec.job = o.job.job.empty() ? std::to_string(::getpid()) : o.job.job;
  spec.nranks = o.nranks;
  spec.nodes = std::move(*plan);
  spec.argv = o.argv;
  spec.env = job_environment(environ, o.env_exclude, o.nolocal);
  spec.cwd = cwd;
  spec.checkpoint_dir = o.job.checkpoint_dir;
  spec.keep = o.job.keep;
  spec.interval = o.job.interval;
  spec.nolocal = o.nolocal;
  std::string warning;
  spec.mpi = describe_mpi(spec.env, &warning);
  if (!warning.empty())
    std::fprintf(stderr, "cr_mpirun: warning: if %s is an MPICH program, %s\n",
                 spec.argv[0].c_str(), warning.c_str());
  return run_job(o.job, *programs, spec, "cr_mpirun");
}
