#include "tools/job_registry.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/unique_fd.hpp"

namespace crkit::mpi_tools {

namespace {

using Json = nlohmann::json;

// A registry directory: created when missing, otherwise it must be ours and closed to others.
Status ensure_private_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return fail_errno(fmt::format("creating the job registry directory {}", dir));
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0)
    return fail_errno(fmt::format("job registry directory {}", dir));
  if (!S_ISDIR(st.st_mode))
    return fail(ENOTDIR, fmt::format("job registry {} is not a directory", dir));
  if (st.st_uid != ::geteuid())
    return fail(EACCES, fmt::format("job registry directory {} belongs to uid {}, not to you "
                                    "(set CRKIT_RUN_DIR to a directory of your own)",
                                    dir, st.st_uid));
  if (st.st_mode & 022)
    return fail(EACCES, fmt::format("job registry directory {} is writable by others "
                                    "(mode {:o}); make it 0700",
                                    dir, st.st_mode & 07777));
  return {};
}

Status write_all(int fd, const std::string& s, const std::string& name) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno(fmt::format("writing {}", name));
    off += static_cast<size_t>(n);
  }
  return {};
}

}  // namespace

std::string default_run_dir() {
  const char* env = std::getenv("CRKIT_RUN_DIR");
  if (env && *env) return env;
  return fmt::format("/tmp/crkit-{}", ::getuid());
}

Status check_job_name(std::string_view job) {
  if (job.empty()) return fail(EINVAL, "the job name is empty");
  if (job.size() > 64)
    return fail(EINVAL, fmt::format("job name '{}' is longer than 64 characters", job));
  if (job.front() == '.' || job.front() == '-')
    return fail(EINVAL, fmt::format("job name '{}' must not start with '{}'", job, job.front()));
  for (char c : job) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok)
      return fail(EINVAL, fmt::format("job name '{}' may hold only letters, digits, '.', '_' "
                                      "and '-'",
                                      job));
  }
  return {};
}

std::string record_path(const std::string& run_dir, const std::string& job) {
  return fmt::format("{}/jobs/{}.json", run_dir, job);
}

Status write_job_record(const std::string& run_dir, const JobRecord& r) {
  CRKIT_TRY(check_job_name(r.job));
  CRKIT_TRY(ensure_private_dir(run_dir));
  const std::string jobs = run_dir + "/jobs";
  CRKIT_TRY(ensure_private_dir(jobs));
  const std::string path = record_path(run_dir, r.job);
  Json j = {{"job", r.job},         {"coord", r.coord},
            {"pid", r.pid},         {"checkpoint_dir", r.checkpoint_dir},
            {"started", r.started}, {"token", r.token}};
  const std::string text = j.dump() + "\n";
  // A unique temporary name, so that two writers never share one; rename makes the record
  // appear whole to a concurrent reader.
  std::string tmp = fmt::format("{}/.{}.json.tmp.XXXXXX", jobs, r.job);
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) return fail_errno(fmt::format("creating a temporary file in {}", jobs));
  Status st = write_all(fd.get(), text, tmp);
  if (st && ::fchmod(fd.get(), 0600) != 0) st = fail_errno(fmt::format("chmod {}", tmp));
  if (st && ::close(fd.release()) != 0) st = fail_errno(fmt::format("closing {}", tmp));
  if (st && ::rename(tmp.c_str(), path.c_str()) != 0)
    st = fail_errno(fmt::format("renaming {} to {}", tmp, path));
  if (!st) ::unlink(tmp.c_str());
  return st;
}

Result<JobRecord> read_job_record(const std::string& run_dir, const std::string& job) {
  CRKIT_TRY(check_job_name(job));
  const std::string path = record_path(run_dir, job);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT)
      return fail(ESRCH, fmt::format("no job '{}' is registered in {}/jobs (a job started on "
                                     "another host or by another user needs --coord HOST:PORT)",
                                     job, run_dir));
    return fail_errno(fmt::format("opening {}", path));
  }
  // The record says which coordinator gets our token: only one of ours, closed to others,
  // in directories only we can write, is believed.
  struct stat sb {};
  if (::fstat(fd.get(), &sb) != 0) return fail_errno(fmt::format("stat of {}", path));
  if (sb.st_uid != ::geteuid() || (sb.st_mode & 077))
    return fail(EACCES, fmt::format("{} is not private to you (uid {}, mode {:04o}): not trusted",
                                    path, sb.st_uid, sb.st_mode & 07777));
  for (const std::string& dir : {run_dir, run_dir + "/jobs"}) {
    struct stat ds {};
    if (::stat(dir.c_str(), &ds) != 0) return fail_errno(fmt::format("stat of {}", dir));
    if (ds.st_uid != ::geteuid() || (ds.st_mode & 022))
      return fail(EACCES, fmt::format("job registry directory {} is not private to you (uid {}, "
                                      "mode {:o}): not trusted",
                                      dir, ds.st_uid, ds.st_mode & 07777));
  }
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno(fmt::format("reading {}", path));
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (1u << 20)) return fail(EINVAL, fmt::format("{} is too large", path));
  }
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return fail(EINVAL, fmt::format("{}: not a JSON object", path));
  JobRecord r;
  auto str = [&](const char* key, std::string* out) -> Status {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string())
      return fail(EINVAL, fmt::format("{}: \"{}\" is missing or not a string", path, key));
    *out = it->get<std::string>();
    return {};
  };
  CRKIT_TRY(str("job", &r.job));
  CRKIT_TRY(str("coord", &r.coord));
  CRKIT_TRY(str("checkpoint_dir", &r.checkpoint_dir));
  CRKIT_TRY(str("started", &r.started));
  CRKIT_TRY(str("token", &r.token));
  auto pid = j.find("pid");
  if (pid == j.end() || !pid->is_number_integer() || pid->get<long long>() <= 0)
    return fail(EINVAL, fmt::format("{}: \"pid\" is missing or not a process id", path));
  r.pid = static_cast<pid_t>(pid->get<long long>());
  if (r.job != job)
    return fail(EINVAL, fmt::format("{}: records job '{}', not '{}'", path, r.job, job));
  return r;
}

Status remove_job_record(const std::string& run_dir, const std::string& job, pid_t owner) {
  auto r = read_job_record(run_dir, job);
  if (!r) return r.error().code == ESRCH ? Status{} : Status{r.error()};
  if (r->pid != owner) return {};
  const std::string path = record_path(run_dir, job);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return fail_errno(fmt::format("removing {}", path));
  return {};
}

bool record_owner_alive(const JobRecord& r) {
  return r.pid > 0 && (::kill(r.pid, 0) == 0 || errno == EPERM);
}

}  // namespace crkit::mpi_tools
