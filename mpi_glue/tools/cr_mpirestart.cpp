// cr_mpirestart: restart an MPI job from a global snapshot (taken with cr_snapshot), on the
// hosts it ran on or on others, and follow it as cr_mpirun does.
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "snapshot/manifest.hpp"
#include "tools/job_launch.hpp"
#include "tools/tool_options.hpp"

namespace {

using namespace crkit::mpi_tools;
using crkit::Result;

constexpr int kUsageExit = 2;

void usage(FILE* f) {
  std::fprintf(
      f,
      "Usage: cr_mpirestart SNAPSHOT [options]\n"
      "\n"
      "Restarts the MPI job saved in SNAPSHOT (a snapshot directory CKPT_DIR/JOB/snap-N, or\n"
      "its manifest.json) and waits for it to end. Each node image goes whole onto one host.\n"
      "\n"
      "Hosts:\n"
      "  -f, --hostfile FILE     restart on these hosts ('host', 'host:N', 'host slots=N')\n"
      "      --hosts LIST        restart on 'a,b:2,c' (default: the hosts of the snapshot,\n"
      "                          in the same order)\n"
      "      --launcher CMD      how agents start on other hosts: CMD HOST COMMAND\n"
      "                          (default 'ssh -x'; 'none': run them here, for any host)\n"
      "Restart:\n"
      "      --no-verify         do not check the images' checksums first (sizes still are)\n"
      "      --pid-namespace     restart every node in a new PID namespace (default: only\n"
      "                          where the original PIDs are taken)\n"
      "Snapshots of the restarted job:\n"
      "      --checkpoint-dir DIR   they go to DIR/JOB/snap-N (default: SNAPSHOT's CKPT_DIR)\n"
      "      --checkpoint-interval SEC  take one every SEC seconds (default 0: on request)\n"
      "      --keep K            keep the newest K snapshots (default 0: keep all)\n"
      "      --job NAME          the restarted job's name (default: this pid)\n"
      "Coordinator:\n"
      "      --coord HOST:PORT   use this cr_coordd (default: start a private one)\n"
      "      --coord-host H      the name the nodes reach this host by (default: hostname)\n"
      "      --token-file FILE   the --coord coordinator's token (see cr_coordd --help;\n"
      "                          default: $CRKIT_COORD_TOKEN)\n"
      "Other:\n"
      "  -v, --verbose           print progress\n"
      "  -h, -?, --help          this help\n"
      "      --version           print the version\n"
      "Exit status: the job's exit code; 128+N when signal N stopped cr_mpirestart (the job\n"
      "is killed); 2 on bad usage; 22 (EINVAL) when the hosts cannot hold the snapshot's\n"
      "images; otherwise the errno of the failure (e.g. 5 EIO: an image does not match its\n"
      "checksum).\n");
}

// SNAPSHOT as absolute paths: the snapshot directory and its manifest.json.
struct Where {
  std::string dir, manifest;
};
Result<Where> locate(const std::string& snapshot) {
  char buf[PATH_MAX];
  if (!::realpath(snapshot.c_str(), buf))
    return crkit::fail_errno(fmt::format("snapshot {}", snapshot));
  std::string path = buf;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return crkit::fail_errno(fmt::format("snapshot {}", path));
  if (S_ISDIR(st.st_mode))
    return Where{path, path == "/" ? "/manifest.json" : path + "/" + crkit::coord::kManifestName};
  auto slash = path.rfind('/');
  return Where{slash == 0 ? "/" : path.substr(0, slash), path};
}

// CKPT_DIR of CKPT_DIR/JOB/snap-N.
std::string parent(const std::string& dir) {
  auto slash = dir.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : dir.substr(0, slash);
}

}  // namespace

int main(int argc, char** argv) {
  crkit::log::set_program("cr_mpirestart");
  char* cwd_c = ::get_current_dir_name();
  if (!cwd_c) {
    std::perror("cr_mpirestart: getcwd");
    return EXIT_FAILURE;
  }
  const std::string cwd = cwd_c;
  std::free(cwd_c);

  auto parsed = parse_mpirestart_args(std::vector<std::string>(argv, argv + argc), cwd);
  if (!parsed) {
    std::fprintf(stderr, "cr_mpirestart: %s\n", parsed.error().message.c_str());
    usage(stderr);
    return kUsageExit;
  }
  MpirestartOptions& o = *parsed;
  if (o.action == Action::Help) {
    usage(stdout);
    return 0;
  }
  if (o.action == Action::Version) {
    std::printf("cr_mpirestart (crkit) %s\n", CRKIT_VERSION);
    return 0;
  }
  if (o.job.verbose) crkit::log::set_threshold(crkit::log::Level::Verbose);
  auto die = [](const crkit::Error& e) {
    crkit::log::error("{}", e.message);
    return crkit::exit_code_of(e.code) ? crkit::exit_code_of(e.code) : 1;
  };

  auto where = locate(o.snapshot);
  if (!where) return die(where.error());
  auto m = crkit::coord::read_manifest(where->manifest);
  if (!m) return die(m.error());
  crkit::log::info("snapshot {} of job '{}': {} ranks on {} nodes, taken {}", m->seq, m->job,
                   m->nranks, m->images.size(), m->created);
  if (o.verify) {
    crkit::log::info("verifying {} images", m->images.size());
    if (auto st = crkit::coord::verify_images(where->dir, *m); !st) return die(st.error());
  }

  auto hosts = load_hosts(o.job);
  if (!hosts) return die(hosts.error());
  if (hosts->empty()) {
    for (const auto& h : m->hosts) hosts->push_back({h, 0});
    if (hosts->empty())  // a manifest may leave out the host list; its images name theirs
      for (const auto& img : m->images) hosts->push_back({img.host, 0});
  }
  auto plan = crkit::coord::plan_restart(*m, *hosts);
  if (!plan) {
    crkit::log::error("{}", plan.error().message);
    return EINVAL;
  }
  auto programs = find_programs();
  if (!programs) return die(programs.error());

  JobSpec spec;
  spec.job = o.job.job.empty() ? std::to_string(::getpid()) : o.job.job;
  spec.nranks = m->nranks;
  spec.nodes = std::move(*plan);
  spec.argv = m->argv;
  spec.env = m->env;
  spec.cwd = m->cwd;
  spec.checkpoint_dir =
      o.job.checkpoint_dir.empty() ? parent(parent(where->dir)) : o.job.checkpoint_dir;
  spec.keep = o.job.keep;
  spec.interval = o.job.interval;
  spec.nolocal = m->nolocal;
  spec.mpi = m->mpi;
  spec.restart_manifest = where->manifest;
  spec.pid_namespace_always = o.pid_namespace_always;
  return run_job(o.job, *programs, spec, "cr_mpirestart");
}
