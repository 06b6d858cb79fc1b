// cr_snapshot: take a coordinated global snapshot of a running MPI job (cr_mpirun,
// cr_mpirestart), in the manner of ompi-checkpoint; also the job's status and its snapshots.
#include <cerrno>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "protocol/channel.hpp"
#include "protocol/token.hpp"
#include "tools/job_registry.hpp"
#include "tools/tool_options.hpp"

namespace {

using namespace crkit::mpi_tools;
using crkit::Error;
using crkit::Result;
using crkit::coord::Json;

// As cr_checkpoint: failures exit with an errno, so bad usage takes 255 (BLCR's exit(-1)).
constexpr int kUsageExit = 255;
constexpr int kQueryMs = 30000;  // status, list: answered at once
// The coordinator gives up after --timeout and answers; this waits a little longer for that.
constexpr int kReplySlackMs = 30000;

void usage(FILE* f) {
  std::fprintf(
      f,
      "Usage: cr_snapshot [options] JOB\n"
      "\n"
      "Takes a coordinated snapshot of MPI job JOB (the --job name given to cr_mpirun, by\n"
      "default its pid) and prints the snapshot directory, which cr_mpirestart restarts.\n"
      "The job continues; a failed snapshot is abandoned and the job continues too.\n"
      "\n"
      "What to do (default: take a snapshot):\n"
      "      --term              take a snapshot, then end the job\n"
      "      --status            print the job's state and any snapshot in progress\n"
      "  -l, --list              print the job's committed snapshots: SEQ DIR CREATED\n"
      "Options:\n"
      "      --coord HOST:PORT   the job's coordinator (default: from the registry\n"
      "                          ${CRKIT_RUN_DIR:-/tmp/crkit-$UID}/jobs/JOB.json of this host)\n"
      "      --token-file FILE   the coordinator's token (default: the job's record; with\n"
      "                          --coord, $CRKIT_COORD_TOKEN)\n"
      "      --timeout SEC       abandon the snapshot after SEC seconds (default 600,\n"
      "                          0 = no limit)\n"
      "      --json              print the coordinator's reply as JSON instead\n"
      "  -v, --verbose           print progress and timings\n"
      "  -h, -?, --help          this help\n"
      "      --version           print the version\n"
      "Exit status: 0, or the errno of the failure as BLCR's tools do (e.g. 3 ESRCH: no such\n"
      "job, 16 EBUSY: a snapshot is already in progress, 110 ETIMEDOUT); 255 on bad usage.\n");
}

struct Coordinator {
  crkit::coord::Endpoint ep;
  std::string token;
};

// The coordinator of the job and its token: --coord and --token-file (or $CRKIT_COORD_TOKEN),
// or the record its cr_mpirun left on this host.
Result<Coordinator> find_coordinator(const SnapshotOptions& o) {
  if (o.coord) {
    CRKIT_ASSIGN(std::string token, crkit::coord::client_token(o.token_file, o.coord->str()));
    return Coordinator{*o.coord, token};
  }
  // A job found in the registry has its own coordinator's token there ($CRKIT_COORD_TOKEN,
  // meant for a shared coordinator, does not apply); --token-file still overrides it.
  std::string token;
  if (!o.token_file.empty()) {
    CRKIT_ASSIGN(token, crkit::coord::read_token_file(o.token_file, false));
  }
  const std::string run_dir = default_run_dir();
  CRKIT_ASSIGN(JobRecord r, read_job_record(run_dir, o.job));
  if (!record_owner_alive(r))
    return crkit::fail(ESRCH, fmt::format("job '{}' is not running: the process that started "
                                          "it (pid {}) has ended (stale record {})",
                                          o.job, r.pid, record_path(run_dir, o.job)));
  auto ep = crkit::coord::parse_endpoint(r.coord);
  if (!ep) return crkit::fail(ep.error().context(record_path(run_dir, o.job)));
  return Coordinator{*ep, token.empty() ? r.token : token};
}

// A refusal as an Error: its text and code, both from the coordinator when it gave them.
Error refusal(const Json& reply) {
  return Error{reply.value("code", EIO), reply.value("error", std::string("no reason given"))};
}

int exit_status(const Error& e) {
  int code = crkit::exit_code_of(e.code);
  return code ? code : 1;
}

std::string text_or(const Json& j, const char* key, const std::string& dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  return it->is_string() ? it->get<std::string>() : it->dump();
}

// A duration of the reply in milliseconds, to a tenth.
std::string ms_of(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return "?";
  return fmt::format("{:.1f}", it->get<double>());
}

void print_status(const std::string& job, const Json& reply) {
  const Json empty = Json::object();
  const Json& j = reply.contains("job") && reply["job"].is_object() ? reply["job"] : empty;
  std::printf("job %s: %s\n", job.c_str(), text_or(j, "state", "unknown").c_str());
  auto snap = j.find("snapshot");
  if (snap == j.end() || !snap->is_object()) return;
  std::printf("snapshot %s in progress: %s, %s of %s nodes done\n",
              text_or(*snap, "seq", "?").c_str(), text_or(*snap, "phase", "?").c_str(),
              text_or(*snap, "nodes_done", "?").c_str(), text_or(*snap, "nodes", "?").c_str());
}

void print_list(const Json& reply) {
  auto it = reply.find("snapshots");
  if (it == reply.end() || !it->is_array()) return;
  for (const auto& s : *it)
    std::printf("%s %s %s\n", text_or(s, "seq", "?").c_str(), text_or(s, "dir", "?").c_str(),
                text_or(s, "created", "?").c_str());
}

}  // namespace

int main(int argc, char** argv) {
  crkit::log::set_program("cr_snapshot");
  auto parsed = parse_snapshot_args(std::vector<std::string>(argv, argv + argc));
  if (!parsed) {
    std::fprintf(stderr, "cr_snapshot: %s\n", parsed.error().message.c_str());
    usage(stderr);
    return kUsageExit;
  }
  const SnapshotOptions& o = *parsed;
  if (o.action == Action::Help) {
    usage(stdout);
    return 0;
  }
  if (o.action == Action::Version) {
    std::printf("cr_snapshot (crkit) %s\n", CRKIT_VERSION);
    return 0;
  }
  if (o.verbose) crkit::log::set_threshold(crkit::log::Level::Verbose);
  const bool snapshot = o.mode == SnapshotOptions::Mode::Snapshot;

  // Every failure ends here: one message, one exit status, and for --json one JSON line (the
  // coordinator's refusal, or one made up in its shape).
  auto failed = [&](const Error& e, const Json* reply) {
    if (o.json) {
      const Json j = reply ? *reply : Json{{"ok", false}, {"error", e.message}, {"code", e.code}};
      std::printf("%s\n", j.dump().c_str());
    }
    if (snapshot)
      crkit::log::error("snapshot of job {} abandoned: {}", o.job, e.message);
    else
      crkit::log::error("job {}: {}", o.job, e.message);
    return exit_status(e);
  };

  auto found = find_coordinator(o);
  if (!found) return failed(found.error(), nullptr);
  const crkit::coord::Endpoint* ep = &found->ep;

  Json request;
  int timeout_ms = kQueryMs;
  switch (o.mode) {
    case SnapshotOptions::Mode::Snapshot:
      request = {{"op", "snapshot"}, {"job", o.job}, {"term", o.term}, {"timeout", o.timeout}};
      timeout_ms = o.timeout ? static_cast<int>(o.timeout) * 1000 + kReplySlackMs : -1;
      crkit::log::info("requesting a snapshot{} of job {} from the coordinator at {}",
                       o.term ? " (then ending the job)" : "", o.job, ep->str());
      break;
    case SnapshotOptions::Mode::Status:
      request = {{"op", "status"}, {"job", o.job}};
      break;
    case SnapshotOptions::Mode::List:
      request = {{"op", "list"}, {"job", o.job}};
      break;
  }
  request["token"] = found->token;
  auto reply = crkit::coord::call(*ep, request, timeout_ms);
  if (!reply) return failed(reply.error(), nullptr);
  if (!reply->value("ok", false)) return failed(refusal(*reply), &*reply);
  if (o.json) {
    std::printf("%s\n", reply->dump().c_str());
    return 0;
  }
  switch (o.mode) {
    case SnapshotOptions::Mode::Snapshot:
      crkit::log::info("snapshot {} committed in {} ms (quiesce {} ms, dump {} ms)",
                       text_or(*reply, "seq", "?"), ms_of(*reply, "total_ms"),
                       ms_of(*reply, "quiesce_ms"), ms_of(*reply, "dump_ms"));
      std::printf("%s\n", text_or(*reply, "dir", "").c_str());
      break;
    case SnapshotOptions::Mode::Status:
      print_status(o.job, *reply);
      break;
    case SnapshotOptions::Mode::List:
      print_list(*reply);
      break;
  }
  return 0;
}
