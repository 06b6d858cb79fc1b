// The local registry of running MPI jobs: one small JSON file per job, written by cr_mpirun or
// cr_mpirestart while the job runs, so that cr_snapshot can find a job's coordinator from its
// name alone (as ompi-checkpoint finds mpirun from its pid).
//
//   ${CRKIT_RUN_DIR:-/tmp/crkit-$UID}/jobs/JOB.json    (directories 0700, file 0600)
//   {"job":ID,"coord":"HOST:PORT","pid":P,"checkpoint_dir":D,"started":ISO-8601,"token":T}
// The token is the coordinator's secret (protocol/token.hpp): the file's mode keeps it ours.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/result.hpp"

namespace crkit::mpi_tools {

struct JobRecord {
  std::string job;
  std::string coord;  // the coordinator's endpoint, as the job's agents use it
  pid_t pid = 0;      // the cr_mpirun (or cr_mpirestart) that follows the job
  std::string checkpoint_dir;
  std::string started;
  std::string token;  // what the coordinator wants in a connection's first message

  bool operator==(const JobRecord&) const = default;
};

// $CRKIT_RUN_DIR when set and not empty, else /tmp/crkit-UID.
std::string default_run_dir();

// A job name becomes a file name here and a directory name under the checkpoint directory:
// 1..64 letters, digits, '.', '_', '-', not starting with '.' or '-'. EINVAL names the rule.
Status check_job_name(std::string_view job);

// RUN_DIR/jobs/JOB.json
std::string record_path(const std::string& run_dir, const std::string& job);

// Creates RUN_DIR and RUN_DIR/jobs when missing (mode 0700) and writes the record atomically
// (a temporary file, mode 0600, renamed over JOB.json). Either directory must be a real
// directory owned by the caller and writable by nobody else: the registry tells cr_snapshot
// which coordinator to trust, so another user must not be able to plant a record.
Status write_job_record(const std::string& run_dir, const JobRecord& r);

// The record of job; ESRCH when there is none.
Result<JobRecord> read_job_record(const std::string& run_dir, const std::string& job);

// Removes job's record if it is still the one `owner` wrote (a later run of the same name may
// have replaced it). A missing record is not an error.
Status remove_job_record(const std::string& run_dir, const std::string& job, pid_t owner);

// Whether the process that wrote r still exists (records of crashed runs stay behind).
bool record_owner_alive(const JobRecord& r);

}  // namespace crkit::mpi_tools
