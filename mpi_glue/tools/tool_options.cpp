#include "tools/tool_options.hpp"

#include <getopt.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include <fmt/format.h>

#include "tools/job_registry.hpp"

namespace crkit::mpi_tools {

namespace {

enum LongOnly {
  kHosts = 1000,
  kPpn,
  kLauncher,
  kCheckpointDir,
  kInterval,
  kKeep,
  kJob,
  kCoord,
  kCoordHost,
  kTokenFile,
  kNolocal,
  kEnvExclude,
  kVersion,
  kNoVerify,
  kPidNamespace,
  kTimeout,
  kTerm,
  kStatus,
  kJson,
};

// getopt wants mutable C strings and keeps its state in globals; one parse owns both.
class Argv {
 public:
  explicit Argv(const std::vector<std::string>& args) : store_(args) {
    for (auto& s : store_) ptrs_.push_back(s.data());
    ptrs_.push_back(nullptr);
    optind = 0;  // 0, not 1: glibc then re-reads the optstring's mode ('+') as well
    opterr = 0;
  }
  int argc() const { return static_cast<int>(store_.size()); }
  char** argv() { return ptrs_.data(); }

 private:
  std::vector<std::string> store_;
  std::vector<char*> ptrs_;
};

// The message for getopt's '?' or ':' (the optstring starts with ':' after any '+').
Error getopt_error(int c, char** argv) {
  std::string opt = optopt > ' ' && optopt < 127 ? fmt::format("-{}", static_cast<char>(optopt))
                                                 : std::string(argv[optind - 1]);
  if (c == ':') return make_error(EINVAL, fmt::format("option '{}' needs an argument", opt));
  return make_error(EINVAL, fmt::format("unrecognized option '{}'", opt));
}

Result<long> parse_number(const char* text, long min, long max, const char* what) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(text, &end, 10);
  if (!*text || !end || *end || errno == ERANGE || v < min || v > max)
    return fail(EINVAL,
                fmt::format("{}: '{}' is not a number from {} to {}", what, text, min, max));
  return v;
}

std::vector<std::string> split_spaces(const std::string& s) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t') ++j;
    if (j > i) words.push_back(s.substr(i, j - i));
    i = j;
  }
  return words;
}

// The options of cr_mpirun and cr_mpirestart that JobOptions holds; false when c is not one.
Result<bool> job_option(int c, const char* arg, const std::string& cwd, JobOptions* o) {
  switch (c) {
    case 'f':
      if (!*arg) return fail(EINVAL, "--hostfile: empty file name");
      o->hostfile = arg;
      return true;
    case kHosts: {
      CRKIT_ASSIGN(o->hosts, coord::parse_hosts_option(arg));
      return true;
    }
    case kLauncher:
      if (!std::strcmp(arg, "none")) {
        o->launcher.clear();
        return true;
      }
      o->launcher = split_spaces(arg);
      if (o->launcher.empty())
        return fail(EINVAL,
                    "--launcher: empty command (use --launcher=none to run agents "
                    "without a launcher)");
      return true;
    case kCheckpointDir:
      if (!*arg) return fail(EINVAL, "--checkpoint-dir: empty directory name");
      o->checkpoint_dir = absolute_path(arg, cwd);
      return true;
    case kInterval: {
      CRKIT_ASSIGN(long v, parse_number(arg, 0, 1L << 30, "--checkpoint-interval"));
      o->interval = static_cast<unsigned>(v);
      return true;
    }
    case kKeep: {
      CRKIT_ASSIGN(long v, parse_number(arg, 0, 1000000, "--keep"));
      o->keep = static_cast<unsigned>(v);
      return true;
    }
    case kJob: {
      Status st = check_job_name(arg);
      if (!st) return fail(st.error().context("--job"));
      o->job = arg;
      return true;
    }
    case kCoord: {
      auto ep = coord::parse_endpoint(arg);
      if (!ep) return fail(ep.error().context("--coord"));
      o->coord = *ep;
      return true;
    }
    case kTokenFile:
      if (!*arg) return fail(EINVAL, "--token-file: empty file name");
      o->token_file = arg;
      return true;
    case kCoordHost:
      if (!*arg || std::strpbrk(arg, " \t/"))
        return fail(EINVAL, fmt::format("--coord-host: '{}' is not a host name", arg));
      o->coord_host = arg;
      return true;
    case 'v':
      o->verbose = true;
      return true;
    default:
      return false;
  }
}

// getopt's table: the options of cr_mpirun and cr_mpirestart, then a tool's own.
std::vector<option> with_job_options(std::initializer_list<option> own) {
  std::vector<option> v = {{"hostfile", required_argument, nullptr, 'f'},
                           {"hosts", required_argument, nullptr, kHosts},
                           {"launcher", required_argument, nullptr, kLauncher},
                           {"checkpoint-dir", required_argument, nullptr, kCheckpointDir},
                           {"checkpoint-interval", required_argument, nullptr, kInterval},
                           {"keep", required_argument, nullptr, kKeep},
                           {"job", required_argument, nullptr, kJob},
                           {"coord", required_argument, nullptr, kCoord},
                           {"coord-host", required_argument, nullptr, kCoordHost},
                           {"token-file", required_argument, nullptr, kTokenFile},
                           {"verbose", no_argument, nullptr, 'v'},
                           {"help", no_argument, nullptr, 'h'},
                           {"version", no_argument, nullptr, kVersion}};
  v.insert(v.end(), own);
  v.push_back({nullptr, 0, nullptr, 0});
  return v;
}

Status check_host_source(const JobOptions& o) {
  if (!o.hostfile.empty() && !o.hosts.empty())
    return fail(EINVAL, "give either --hostfile or --hosts, not both");
  return {};
}

bool is_help_request(char** argv) {
  return argv[optind - 1] && !std::strcmp(argv[optind - 1], "-?");
}

}  // namespace

std::string absolute_path(const std::string& dir, const std::string& cwd) {
  const std::string full = !dir.empty() && dir.front() == '/' ? dir : cwd + "/" + dir;
  std::string out;
  size_t i = 0;
  while (i < full.size()) {
    size_t j = full.find('/', i);
    if (j == std::string::npos) j = full.size();
    std::string_view part(full.data() + i, j - i);
    // ".." stays: resolving it by text would be wrong across symbolic links.
    if (!part.empty() && part != ".") {
      out += '/';
      out += part;
    }
    i = j + 1;
  }
  return out.empty() ? "/" : out;
}

Result<MpirunOptions> parse_mpirun_args(const std::vector<std::string>& args,
                                        const std::string& cwd) {
  MpirunOptions o;
  const std::vector<option> longopts =
      with_job_options({{"np", required_argument, nullptr, 'n'},
                        {"ppn", required_argument, nullptr, kPpn},
                        {"nolocal", no_argument, nullptr, kNolocal},
                        {"env-exclude", required_argument, nullptr, kEnvExclude}});
  Argv a(args);
  int c;
  // '+': the options end at PROGRAM, whose own options are its business. getopt_long_only: the
  // single-dash spellings of mpiexec (-np 4, -ppn 2, -hosts a,b) work too.
  while ((c = getopt_long_only(a.argc(), a.argv(), "+:n:f:vh", longopts.data(), nullptr)) != -1) {
    CRKIT_ASSIGN(bool handled, job_option(c, optarg, cwd, &o.job));
    if (handled) continue;
    switch (c) {
      case 'n': {
        CRKIT_ASSIGN(long v, parse_number(optarg, 1, 1000000, "-n"));
        o.nranks = static_cast<int>(v);
        break;
      }
      case kPpn: {
        CRKIT_ASSIGN(long v, parse_number(optarg, 1, 1000000, "--ppn"));
        o.ppn = static_cast<int>(v);
        break;
      }
      case kNolocal:
        o.nolocal = true;
        break;
      case kEnvExclude:
        if (!*optarg || std::strchr(optarg, '='))
          return fail(EINVAL, fmt::format("--env-exclude: '{}' is not a variable name", optarg));
        o.env_exclude.push_back(optarg);
        break;
      case 'h':
        o.action = Action::Help;
        return o;
      case kVersion:
        o.action = Action::Version;
        return o;
      default:
        if (is_help_request(a.argv())) {
          o.action = Action::Help;
          return o;
        }
        return fail(getopt_error(c, a.argv()));
    }
  }
  CRKIT_TRY(check_host_source(o.job));
  if (o.nranks == 0) return fail(EINVAL, "the number of ranks is required (-n N)");
  if (optind >= a.argc()) return fail(EINVAL, "no program given");
  o.argv.assign(args.begin() + optind, args.end());
  if (o.job.checkpoint_dir.empty()) o.job.checkpoint_dir = absolute_path("crkit-snapshots", cwd);
  return o;
}

Result<MpirestartOptions> parse_mpirestart_args(const std::vector<std::string>& args,
                                                const std::string& cwd) {
  MpirestartOptions o;
  const std::vector<option> longopts =
      with_job_options({{"no-verify", no_argument, nullptr, kNoVerify},
                        {"pid-namespace", no_argument, nullptr, kPidNamespace}});
  Argv a(args);
  int c;
  // No '+': SNAPSHOT comes first and the options follow it.
  while ((c = getopt_long_only(a.argc(), a.argv(), ":f:vh", longopts.data(), nullptr)) != -1) {
    CRKIT_ASSIGN(bool handled, job_option(c, optarg, cwd, &o.job));
    if (handled) continue;
    switch (c) {
      case kNoVerify:
        o.verify = false;
        break;
      case kPidNamespace:
        o.pid_namespace_always = true;
        break;
      case 'h':
        o.action = Action::Help;
        return o;
      case kVersion:
        o.action = Action::Version;
        return o;
      default:
        if (is_help_request(a.argv())) {
          o.action = Action::Help;
          return o;
        }
        return fail(getopt_error(c, a.argv()));
    }
  }
  CRKIT_TRY(check_host_source(o.job));
  // getopt moved the operands to the end, in order.
  if (optind >= a.argc()) return fail(EINVAL, "no snapshot given");
  if (optind + 1 < a.argc())
    return fail(EINVAL, fmt::format("one snapshot only ('{}' is extra)", a.argv()[optind + 1]));
  o.snapshot = a.argv()[optind];
  if (o.snapshot.empty()) return fail(EINVAL, "empty snapshot name");
  return o;
}

Result<SnapshotOptions> parse_snapshot_args(const std::vector<std::string>& args) {
  SnapshotOptions o;
  static const option longopts[] = {{"coord", required_argument, nullptr, kCoord},
                                    {"token-file", required_argument, nullptr, kTokenFile},
                                    {"timeout", required_argument, nullptr, kTimeout},
                                    {"term", no_argument, nullptr, kTerm},
                                    {"status", no_argument, nullptr, kStatus},
                                    {"list", no_argument, nullptr, 'l'},
                                    {"json", no_argument, nullptr, kJson},
                                    {"verbose", no_argument, nullptr, 'v'},
                                    {"help", no_argument, nullptr, 'h'},
                                    {"version", no_argument, nullptr, kVersion},
                                    {nullptr, 0, nullptr, 0}};
  Argv a(args);
  int modes = 0;
  int c;
  while ((c = getopt_long(a.argc(), a.argv(), ":lvh", longopts, nullptr)) != -1) {
    switch (c) {
      case kCoord: {
        auto ep = coord::parse_endpoint(optarg);
        if (!ep) return fail(ep.error().context("--coord"));
        o.coord = *ep;
        break;
      }
      case kTokenFile:
        if (!*optarg) return fail(EINVAL, "--token-file: empty file name");
        o.token_file = optarg;
        break;
      case kTimeout: {
        // The coordinator's limit; ours is a little longer, so its answer arrives (int ms).
        CRKIT_ASSIGN(long v, parse_number(optarg, 0, 2000000, "--timeout"));
        o.timeout = static_cast<unsigned>(v);
        break;
      }
      case kTerm:
        o.term = true;
        break;
      case kStatus:
        o.mode = SnapshotOptions::Mode::Status;
        ++modes;
        break;
      case 'l':
        o.mode = SnapshotOptions::Mode::List;
        ++modes;
        break;
      case kJson:
        o.json = true;
        break;
      case 'v':
        o.verbose = true;
        break;
      case 'h':
        o.action = Action::Help;
        return o;
      case kVersion:
        o.action = Action::Version;
        return o;
      default:
        if (is_help_request(a.argv())) {
          o.action = Action::Help;
          return o;
        }
        return fail(getopt_error(c, a.argv()));
    }
  }
  if (modes > 1) return fail(EINVAL, "give one of --status and --list");
  if (o.term && o.mode != SnapshotOptions::Mode::Snapshot)
    return fail(EINVAL, "--term takes a snapshot; it does not go with --status or --list");
  if (optind >= a.argc()) return fail(EINVAL, "missing job id");
  if (optind + 1 < a.argc())
    return fail(EINVAL, fmt::format("one job only ('{}' is extra)", a.argv()[optind + 1]));
  o.job = a.argv()[optind];
  Status st = check_job_name(o.job);
  if (!st) return fail(st.error());
  return o;
}

}  // namespace crkit::mpi_tools
