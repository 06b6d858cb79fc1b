// cr_restart: restart a process from a context file (BLCR-compatible), wait for it and exit
// as it does.
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "common/unique_fd.hpp"
#include "engine/restart.hpp"
#include "tools/progress.hpp"
#include "tools/signal_policy.hpp"

namespace {

// The restored process that forwarded signals go to (read by the signal handler only).
volatile sig_atomic_t g_forward_to = 0;

struct Hooks {
  std::string on_success, fail_args, fail_temp, fail_env, fail_perm;
};

struct Options {
  std::string file;
  int src_fd = -1;
  int sources = 0;
  int signal = 0;
  crkit::engine::RestartOptions restart;
  Hooks hooks;
  // Started by libcr's cr_request_restart(): report there, make the restored processes the
  // requester's children, do not wait for them.
  int libcr_report = -1;
  bool wait = true;   // --no-wait: return once the tree runs
  bool json = false;  // --json: a summary on stdout once the tree runs
};

// libcr's helper protocol (node/libcr/requests.cpp): one RESULT line, then the messages.
void report_result(const Options& o, int code, long value, const std::string& message) {
  if (o.libcr_report < 0) return;
  std::string s =
      fmt::format("RESULT {} {}\n{}{}", code, value, message, message.empty() ? "" : "\n");
  (void)!::write(o.libcr_report, s.data(), s.size());
}

void usage(FILE* f) {
  std::fprintf(
      f,
      "Usage: cr_restart [options] [CONTEXT_FILE]\n"
      "\n"
      "Source:\n"
      "  -f, --file FILE       read the context from FILE (default: the last argument)\n"
      "  -F, --fd FD           read the context from file descriptor FD (file or pipe)\n"
      "Signal sent to the restarted process (last one wins):\n"
      "  --run (default), --stop (--freeze), --term, --abort, --kill, --cont, -S, --signal N\n"
      "Identity:\n"
      "  --restore-pid (default) / --no-restore-pid    original PID, or a new PID namespace\n"
      "  --restore-pgid / --no-restore-pgid (default)\n"
      "  --restore-sid / --no-restore-sid (default)\n"
      "  --relocate OLD=NEW    replace leading path OLD by NEW in saved paths (repeatable)\n"
      "Hooks (run with system(); a non-zero exit becomes cr_restart's exit status):\n"
      "  --run-on-success=CMD, --run-on-fail-args=CMD, --run-on-fail-temp=CMD,\n"
      "  --run-on-fail-env=CMD, --run-on-fail-perm=CMD, --run-on-failure=CMD (all failures)\n"
      "Speed and scripting:\n"
      "      --no-wait         return (exit 0) once the restored processes run, instead of\n"
      "                        waiting for the restarted process to end\n"
      "      --json            print a JSON summary on stdout (pids, image size, timings)\n"
      "      --workers N       threads that read, decompress and fill memory (default: CPUs)\n"
      "Other:\n"
      "  --omit-maybe (default) / --omit-always / --omit-never\n"
      "  -q, --quiet           no messages\n"
      "      --verbose         more messages\n"
      "  -h, -?, --help        this help\n"
      "  -v, --version         print the version\n"
      "Exit status: the restarted process's exit status (or its fatal signal, re-raised);\n"
      "on failure the errno of the failure (e.g. 16 EBUSY: PID in use), 255 on bad usage.\n");
}

enum LongOnly {
  kOmitMaybe = 1000,
  kOmitAlways,
  kOmitNever,
  kOnSuccess,
  kFailArgs,
  kFailTemp,
  kFailEnv,
  kFailPerm,
  kFailAll,
  kRelocate,
  kRestorePid,
  kNoRestorePid,
  kRestorePgid,
  kNoRestorePgid,
  kRestoreSid,
  kNoRestoreSid,
  kKmsgNone,
  kKmsgError,
  kKmsgWarning,
  kVerbose,
  kLibcrReport,
  kLibcrRequester,
  kLibcrSibling,
  kNoWait,
  kJson,
  kWorkers
};

int run_hook(const std::string& cmd) {
  if (cmd.empty()) return 0;
  std::fflush(nullptr);
  int st = std::system(cmd.c_str());
  if (st == -1) return 1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

[[noreturn]] void args_failure(const Options& o, bool quiet, const std::string& msg) {
  if (!quiet && !msg.empty()) std::fprintf(stderr, "cr_restart: %s\n", msg.c_str());
  if (!quiet) usage(stderr);
  int h = run_hook(o.hooks.fail_args);
  std::exit(h ? h : 255);
}

bool parse_relocation(const char* arg, std::pair<std::string, std::string>* out) {
  // OLD=NEW with "\=" and "\\" escapes; both absolute; trailing '/' trimmed.
  std::string parts[2];
  int which = 0;
  for (const char* p = arg; *p; ++p) {
    if (*p == '\\' && (p[1] == '=' || p[1] == '\\')) {
      parts[which].push_back(*++p);
    } else if (*p == '=' && which == 0) {
      which = 1;
    } else {
      parts[which].push_back(*p);
    }
  }
  if (which != 1) return false;
  for (auto& s : parts) {
    if (s.empty() || s[0] != '/') return false;
    while (s.size() > 1 && s.back() == '/') s.pop_back();
  }
  *out = {parts[0], parts[1]};
  return true;
}

Options parse(int argc, char** argv) {
  Options o;
  bool quiet = false;
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "-q") || !std::strcmp(argv[i], "--quiet")) quiet = true;
  static const option longopts[] = {
      {"help", no_argument, nullptr, 'h'},
      {"version", no_argument, nullptr, 'v'},
      {"quiet", no_argument, nullptr, 'q'},
      {"verbose", no_argument, nullptr, kVerbose},
      {"file", required_argument, nullptr, 'f'},
      {"fd", required_argument, nullptr, 'F'},
      {"dir", required_argument, nullptr, 'd'},
      {"run", no_argument, nullptr, crkit::tools::kOptRun},
      {"signal", required_argument, nullptr, 'S'},
      {"stop", no_argument, nullptr, crkit::tools::kOptStop},
      {"freeze", no_argument, nullptr, crkit::tools::kOptStop},
      {"term", no_argument, nullptr, crkit::tools::kOptTerm},
      {"abort", no_argument, nullptr, crkit::tools::kOptAbort},
      {"kill", no_argument, nullptr, crkit::tools::kOptKill},
      {"cont", no_argument, nullptr, crkit::tools::kOptCont},
      {"early-stop", no_argument, nullptr, crkit::tools::kOptEarlyStop},
      {"early-abrt", no_argument, nullptr, crkit::tools::kOptEarlyAbrt},
      {"omit-maybe", no_argument, nullptr, kOmitMaybe},
      {"omit-always", no_argument, nullptr, kOmitAlways},
      {"omit-never", no_argument, nullptr, kOmitNever},
      {"run-on-success", required_argument, nullptr, kOnSuccess},
      {"run-on-fail-args", required_argument, nullptr, kFailArgs},
      {"run-on-fail-temp", required_argument, nullptr, kFailTemp},
      {"run-on-fail-env", required_argument, nullptr, kFailEnv},
      {"run-on-fail-perm", required_argument, nullptr, kFailPerm},
      {"run-on-failure", required_argument, nullptr, kFailAll},
      {"relocate", required_argument, nullptr, kRelocate},
      {"restore-pid", no_argument, nullptr, kRestorePid},
      {"no-restore-pid", no_argument, nullptr, kNoRestorePid},
      {"restore-pgid", no_argument, nullptr, kRestorePgid},
      {"no-restore-pgid", no_argument, nullptr, kNoRestorePgid},
      {"restore-sid", no_argument, nullptr, kRestoreSid},
      {"no-restore-sid", no_argument, nullptr, kNoRestoreSid},
      {"kmsg-none", no_argument, nullptr, kKmsgNone},
      {"kmsg-error", no_argument, nullptr, kKmsgError},
      {"kmsg-warning", no_argument, nullptr, kKmsgWarning},
      {"libcr-report", required_argument, nullptr, kLibcrReport},
      {"libcr-requester", required_argument, nullptr, kLibcrRequester},
      {"libcr-sibling", no_argument, nullptr, kLibcrSibling},
      {"no-wait", no_argument, nullptr, kNoWait},
      {"json", no_argument, nullptr, kJson},
      {"workers", required_argument, nullptr, kWorkers},
      {nullptr, 0, nullptr, 0}};
  // Hooks must be known before any argument error is reported.
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto take = [&](const char* name, std::string* dst) {
      std::string pre = std::string("--") + name + "=";
      if (a.rfind(pre, 0) == 0) *dst = a.substr(pre.size());
    };
    take("run-on-fail-args", &o.hooks.fail_args);
    std::string all;
    take("run-on-failure", &all);
    if (!all.empty()) o.hooks.fail_args = all;
  }
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h?vqf:F:d:S:", longopts, nullptr)) != -1) {
    switch (c) {
      case 'h':
        usage(stdout);
        std::exit(0);
      case '?':
        if (optopt == 0 && !std::strcmp(argv[optind - 1], "-?")) {
          usage(stdout);
          std::exit(0);
        }
        args_failure(o, quiet, fmt::format("invalid option '{}'", argv[optind - 1]));
      case 'v':
        std::printf("cr_restart (crkit) %s\n", CRKIT_VERSION);
        std::exit(0);
      case 'q':
        crkit::log::set_threshold(crkit::log::Level::Quiet);
        break;
      case kVerbose:
        crkit::log::set_threshold(crkit::log::Level::Verbose);
        break;
      case 'f':
        ++o.sources;
        o.file = optarg;
        break;
      case 'F': {
        ++o.sources;
        char* end = nullptr;
        long v = std::strtol(optarg, &end, 10);
        if (!end || *end || v < 0)
          args_failure(o, quiet, fmt::format("invalid file descriptor '{}'", optarg));
        o.src_fd = static_cast<int>(v);
        break;
      }
      case 'd':
        args_failure(o, quiet, "--dir is not implemented (as in BLCR)");
      case 'S':
        if (!crkit::tools::parse_signal_number(optarg, &o.signal))
          args_failure(o, quiet, fmt::format("invalid signal number '{}'", optarg));
        break;
      case kOmitMaybe:
      case kOmitAlways:
      case kOmitNever:
        break;  // meaningful once libcr exists
      case kOnSuccess:
        o.hooks.on_success = optarg;
        break;
      case kFailArgs:
        o.hooks.fail_args = optarg;
        break;
      case kFailTemp:
        o.hooks.fail_temp = optarg;
        break;
      case kFailEnv:
        o.hooks.fail_env = optarg;
        break;
      case kFailPerm:
        o.hooks.fail_perm = optarg;
        break;
      case kFailAll:
        o.hooks.fail_args = o.hooks.fail_temp = o.hooks.fail_env = o.hooks.fail_perm = optarg;
        break;
      case kRelocate: {
        std::pair<std::string, std::string> r;
        if (!parse_relocation(optarg, &r))
          args_failure(o, quiet,
                       fmt::format("invalid --relocate '{}': expected /OLD=/NEW", optarg));
        if (o.restart.relocations.size() >= 16)
          args_failure(o, quiet, "at most 16 --relocate options");
        o.restart.relocations.push_back(r);
        break;
      }
      case kRestorePid:
        o.restart.restore_pid = true;
        break;
      case kNoRestorePid:
        o.restart.restore_pid = false;
        break;
      case kRestorePgid:
        o.restart.restore_pgid = true;
        break;
      case kNoRestorePgid:
        o.restart.restore_pgid = false;
        break;
      case kRestoreSid:
        o.restart.restore_sid = true;
        break;
      case kNoRestoreSid:
        o.restart.restore_sid = false;
        break;
      case kKmsgNone:
      case kKmsgError:
      case kKmsgWarning:
        break;
      case kLibcrReport:
        o.libcr_report = std::atoi(optarg);
        break;
      case kLibcrRequester:
        o.restart.requester = static_cast<pid_t>(std::atoi(optarg));
        break;
      case kNoWait:
        o.wait = false;
        break;
      case kJson:
        o.json = true;
        break;
      case kWorkers: {
        char* end = nullptr;
        long v = std::strtol(optarg, &end, 10);
        if (!end || *end || v < 1 || v > 64)
          args_failure(o, quiet, fmt::format("invalid number of workers '{}' (1..64)", optarg));
        o.restart.pipeline.workers = static_cast<unsigned>(v);
        break;
      }
      case kLibcrSibling:
        o.restart.as_sibling = true;
        break;
      default:
        if (int sig = crkit::tools::signal_of_option(c); sig >= 0) {
          o.signal = sig;  // --run/--stop/--term/--abort/--kill/--cont: last one wins
          break;
        }
        args_failure(o, quiet, "");
    }
  }
  if (optind < argc) {
    if (optind != argc - 1) args_failure(o, quiet, "too many arguments");
    ++o.sources;
    o.file = argv[optind];
  }
  if (o.sources == 0) args_failure(o, quiet, "no context file given");
  if (o.sources > 1) args_failure(o, quiet, "only one context source may be given");
  return o;
}

int failure_exit(const Options& o, const crkit::Error& e) {
  crkit::log::error("Restart failed: {}", e.message);
  report_result(o, e.code, 0, "Restart failed: " + e.message);
  int code = crkit::exit_code_of(e.code);
  if (!code) code = 1;
  const std::string* hook = &o.hooks.fail_perm;
  switch (e.code) {
    case ENOMEM:
    case EBUSY:
      hook = &o.hooks.fail_temp;
      break;
    case EACCES:
    case EPERM:
    case ENOENT:
    case EEXIST:
    case EISDIR:
    case ENOTDIR:
      hook = &o.hooks.fail_env;
      break;
    default:
      break;
  }
  int h = run_hook(*hook);
  return h ? h : code;
}

void forward(int sig) {
  pid_t p = g_forward_to;
  if (p > 0) ::kill(p, sig);
  if (sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) ::raise(SIGSTOP);
}

bool forwardable(int sig) {
  switch (sig) {
    case SIGCHLD:
    case SIGKILL:
    case SIGSTOP:
    case SIGSEGV:
    case SIGILL:
    case SIGFPE:
    case SIGBUS:
    case SIGTRAP:
    case SIGSYS:
      return false;
    default:
      return sig < SIGRTMAX;  // CR_SIGNUM (SIGRTMAX) belongs to libcr
  }
}

sigset_t forwardable_set() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig = 1; sig < SIGRTMAX; ++sig)
    if (forwardable(sig)) sigaddset(&set, sig);
  return set;
}

// Signals that arrive while the restart is under way wait (blocked) and are forwarded once
// the restarted process exists, instead of ending cr_restart half-way.
void start_forwarding(pid_t to) {
  g_forward_to = to;
  struct sigaction sa {};
  sa.sa_handler = forward;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int sig = 1; sig < SIGRTMAX; ++sig)
    if (forwardable(sig)) ::sigaction(sig, &sa, nullptr);
  sigset_t set = forwardable_set();
  ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

[[noreturn]] void mimic(int status) {
  if (WIFEXITED(status)) std::exit(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    struct rlimit no_core {
      0, 0
    };
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
    ::raise(sig);
    std::exit(128 + sig);
  }
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  crkit::log::set_program("cr_restart");
  Options o = parse(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);

  crkit::UniqueFd owned;
  int fd = o.src_fd;
  std::string name = fmt::format("<fd{}>", o.src_fd);
  if (fd < 0) {
    owned.reset(::open(o.file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!owned) {
      int e = errno;
      crkit::log::error("Restart failed: cannot open context file {}: {}", o.file,
                        std::strerror(e));
      int h = run_hook(o.hooks.fail_args);
      return h ? h : crkit::exit_code_of(e);
    }
    fd = owned.get();
    name = o.file;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
      crkit::log::error("Restart failed: context file {} is a directory", o.file);
      int h = run_hook(o.hooks.fail_args);
      return h ? h : EISDIR;
    }
  }
  // cr_get_restart_info()->src: the context file's canonical path.
  if (auto link = ::realpath(fmt::format("/proc/self/fd/{}", fd).c_str(), nullptr)) {
    if (link[0] == '/') o.restart.source = link;
    std::free(link);
  }
  crkit::tools::Progress progress(
      ::isatty(2) && crkit::log::threshold() >= crkit::log::Level::Normal, "cr_restart");
  o.restart.progress = [&](uint64_t d, uint64_t t) {
    progress(d, t);
    return true;
  };
  sigset_t held = forwardable_set(), before;
  ::sigprocmask(SIG_BLOCK, &held, &before);
  // A restart that waits forever (a stand-in stuck on a file) can still be interrupted.
  // Only signals that would end us count (nohup's ignored SIGHUP does not).
  int cancelled_by = 0;
  o.restart.cancel_signal = [&cancelled_by]() {
    sigset_t pending;
    if (::sigpending(&pending) < 0) return 0;
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) {
      struct sigaction sa {};
      if (sigismember(&pending, sig) == 1 && ::sigaction(sig, nullptr, &sa) == 0 &&
          sa.sa_handler == SIG_DFL)
        return cancelled_by = sig;
    }
    return 0;
  };
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t image_bytes = 0;
  if (struct stat st{}; ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
    image_bytes = static_cast<uint64_t>(st.st_size);
  auto r = crkit::engine::restart_image(fd, name, o.restart);
  if (!r) {
    if (r.error().code == EINTR && cancelled_by) {
      // Cancelled: say so, then die of the signal (it is delivered on unblocking).
      crkit::log::error("Restart failed: {}", r.error().message);
      ::sigprocmask(SIG_SETMASK, &before, nullptr);
      return 128 + cancelled_by;
    }
    ::sigprocmask(SIG_SETMASK, &before, nullptr);  // hooks run with the usual mask
    return failure_exit(o, r.error());
  }
  owned.reset();
  if (o.restart.as_sibling) {
    // The restored root is the requester's child now; it waits for it, not we.
    if (o.signal)
      for (pid_t p : r->all) ::kill(p, o.signal);
    report_result(o, 0, r->child, "");
    return 0;
  }
  crkit::log::info(
      "restarted process {}{}{}", r->original_pid,
      r->all.size() > 1 ? fmt::format(" and {} more", r->all.size() - 1) : "",
      r->in_new_pidns ? fmt::format(" (in a new PID namespace; {} here)", r->restored) : "");

  // BLCR: the signal option goes to every restarted process.
  if (o.signal)
    for (pid_t p : r->all) ::kill(p, o.signal);
  if (o.json) {
    nlohmann::json j = {
        {"pid", r->original_pid},
        {"restored", r->restored},
        {"pids", r->all},
        {"processes", r->all.size()},
        {"in_new_pid_namespace", r->in_new_pidns},
        // The namespace's init (our child, or with --as-sibling our parent's): it ends when
        // the namespace is empty.
        {"init", r->in_new_pidns ? r->child : 0},
        {"image_bytes", image_bytes},
        {"restore_seconds",
         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
    std::printf("%s\n", j.dump(2).c_str());
    std::fflush(stdout);
  }
  if (!o.wait) {
    if (!o.hooks.on_success.empty()) return run_hook(o.hooks.on_success);
    return 0;  // the restored tree goes on without us (its root is re-parented)
  }
  start_forwarding(r->restored);
  if (!o.hooks.on_success.empty()) {
    int h = run_hook(o.hooks.on_success);
    if (h) return h;
  }

  int status = 0;
  if (r->in_new_pidns) {
    // The namespace's init passes the root's status on when the root ends (the init itself
    // stays while other processes of the namespace live).
    int inner = 0;
    ssize_t n;
    do n = ::read(r->status_fd.get(), &inner, sizeof(inner));
    while (n < 0 && errno == EINTR);
    if (n == sizeof(inner)) mimic(inner);
  }
  for (;;) {
    pid_t w = ::waitpid(r->child, &status, __WALL);
    if (w == r->child) break;
    if (w < 0 && errno != EINTR) {
      crkit::log::error("waiting for process {}: {}", r->child, std::strerror(errno));
      return 1;
    }
  }
  mimic(status);
}
