// cr_checkpoint: checkpoint a running process into a context file (BLCR-compatible).
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "common/unique_fd.hpp"
#include "engine/checkpoint.hpp"
#include "image/image_file.hpp"
#include "image/page_codec.hpp"
#include "libcr/control_block.h"
#include "tools/progress.hpp"
#include "tools/signal_policy.hpp"

namespace {

// Set by SIGALRM when -t/--time runs out (the one piece of signal-handler state in this tool).
volatile sig_atomic_t g_timed_out = 0;

using crkit::Error;
using crkit::Result;
using crkit::Status;
using crkit::UniqueFd;

enum class FilePolicy { Atomic, Backup, Clobber, NoClobber };

struct Options {
  crkit::engine::Scope scope = crkit::engine::Scope::Tree;
  pid_t id = 0;
  std::string file;
  int dest_fd = -1;
  int destinations = 0;
  FilePolicy policy = FilePolicy::Atomic;
  std::string backup_name;
  int signal = 0;
  bool sync = true;
  bool json = false;
  // zstd level 1 by measurement (bench/stages/compress_bench, bench/README.md): on text-like
  // memory it stores 3.5x where lz4 stores 2.1x at 75% of lz4's speed (still faster than the
  // disk with 2 workers), and it gives up on random data at 5 GB/s.
  crkit::image::CompressionSpec compression{crkit::image::Compression::Zstd, 1};
  int cow = -1;  // --cow 1, --no-cow 0, default -1: when the processes keep running
  unsigned workers = 0;
  unsigned timeout = 0;
  bool ptraced_skip = false;
  // Started by libcr's cr_request_checkpoint(): the pid to name as requester, and where to
  // report (node/libcr/requests.cpp: "STARTED seq", then "RESULT code value" + messages).
  pid_t libcr_requester = 0;
  int libcr_report = -1;
};

void report_line(const Options& o, const std::string& line) {
  if (o.libcr_report >= 0) (void)!::write(o.libcr_report, line.data(), line.size());
}

void usage(FILE* f) {
  std::fprintf(
      f,
      "Usage: cr_checkpoint [options] ID\n"
      "\n"
      "Scope (what ID names):\n"
      "  -T, --tree           process ID and its descendants (default)\n"
      "  -p, --pid, --process process ID only\n"
      "  -g, --pgid, --group  process group ID\n"
      "  -s, --sid, --session session ID\n"
      "Destination:\n"
      "  -c, --cwd            ./context.ID in the current directory (default)\n"
      "  -f, --file FILE      write to FILE\n"
      "  -F, --fd FD          write to open file descriptor FD (file, pipe, socket)\n"
      "File policy:\n"
      "  --atomic             write a temporary file, then rename it (default)\n"
      "  --backup[=NAME]      atomic, keeping the old file as NAME or FILE.~N~\n"
      "  --clobber            overwrite in place\n"
      "  --noclobber          fail if the file exists\n"
      "Signal after the checkpoint (last one wins):\n"
      "  --run (default), --stop, --term, --abort, --kill, --cont, -S, --signal N\n"
      "Speed:\n"
      "  --compress=none|lz4|zstd[:LEVEL]  compress memory (default zstd:1)\n"
      "  --cow / --no-cow     save memory from a copy-on-write snapshot while the\n"
      "                       processes run again (default with --run and --cont)\n"
      "  --workers N          threads that capture, compress and write (default: CPUs)\n"
      "Other:\n"
      "  --sync (default) / --nosync   fsync the file and its directory\n"
      "  -t, --time SEC       give up after SEC seconds (0 = no limit)\n"
      "  --ptraced-error (default) / --ptraced-skip / --ptraced-allow\n"
      "  --save-none (default), --save-exe, --save-private, --save-shared, --save-all\n"
      "  --json               print a JSON summary on stdout\n"
      "  -q, --quiet          no messages\n"
      "  -v, --verbose        more messages\n"
      "  -h, -?, --help       this help\n"
      "      --version        print the version\n"
      "Exit status: 0, or the errno of the failure (e.g. 3 ESRCH, 1 EPERM, 16 EBUSY); 255 on\n"
      "bad usage.\n");
}

enum LongOnly {
  kAtomic = 1000,
  kBackup,
  kClobber,
  kNoClobber,
  kSync,
  kNoSync,
  kSaveExe,
  kSavePrivate,
  kSaveShared,
  kSaveAll,
  kSaveNone,
  kPtracedError,
  kPtracedSkip,
  kPtracedAllow,
  kPtracerError,
  kPtracerSkip,
  kKmsgNone,
  kKmsgError,
  kKmsgWarning,
  kVersion,
  kJson,
  kLibcrReport,
  kLibcrRequester,
  kCompress,
  kCow,
  kNoCow,
  kWorkers
};

[[noreturn]] void usage_error(bool quiet, const std::string& msg) {
  if (!quiet && !msg.empty()) std::fprintf(stderr, "cr_checkpoint: %s\n", msg.c_str());
  if (!quiet) usage(stderr);
  std::exit(255);
}

Options parse(int argc, char** argv) {
  Options o;
  bool quiet = false;
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "-q") || !std::strcmp(argv[i], "--quiet")) quiet = true;
  static const option longopts[] = {
      {"verbose", no_argument, nullptr, 'v'},
      {"quiet", no_argument, nullptr, 'q'},
      {"help", no_argument, nullptr, 'h'},
      {"version", no_argument, nullptr, kVersion},
      {"tree", no_argument, nullptr, 'T'},
      {"pid", no_argument, nullptr, 'p'},
      {"process", no_argument, nullptr, 'p'},
      {"pgid", no_argument, nullptr, 'g'},
      {"group", no_argument, nullptr, 'g'},
      {"sid", no_argument, nullptr, 's'},
      {"session", no_argument, nullptr, 's'},
      {"cwd", no_argument, nullptr, 'c'},
      {"file", required_argument, nullptr, 'f'},
      {"fd", required_argument, nullptr, 'F'},
      {"dir", required_argument, nullptr, 'd'},
      {"atomic", no_argument, nullptr, kAtomic},
      {"backup", optional_argument, nullptr, kBackup},
      {"clobber", no_argument, nullptr, kClobber},
      {"noclobber", no_argument, nullptr, kNoClobber},
      {"run", no_argument, nullptr, crkit::tools::kOptRun},
      {"signal", required_argument, nullptr, 'S'},
      {"stop", no_argument, nullptr, crkit::tools::kOptStop},
      {"term", no_argument, nullptr, crkit::tools::kOptTerm},
      {"abort", no_argument, nullptr, crkit::tools::kOptAbort},
      {"kill", no_argument, nullptr, crkit::tools::kOptKill},
      {"cont", no_argument, nullptr, crkit::tools::kOptCont},
      {"early-stop", no_argument, nullptr, crkit::tools::kOptEarlyStop},
      {"early-abrt", no_argument, nullptr, crkit::tools::kOptEarlyAbrt},
      {"sync", no_argument, nullptr, kSync},
      {"nosync", no_argument, nullptr, kNoSync},
      {"save-exe", no_argument, nullptr, kSaveExe},
      {"save-private", no_argument, nullptr, kSavePrivate},
      {"save-shared", no_argument, nullptr, kSaveShared},
      {"save-all", no_argument, nullptr, kSaveAll},
      {"save-none", no_argument, nullptr, kSaveNone},
      {"ptraced-error", no_argument, nullptr, kPtracedError},
      {"ptraced-skip", no_argument, nullptr, kPtracedSkip},
      {"ptraced-allow", no_argument, nullptr, kPtracedAllow},
      {"ptracer-error", no_argument, nullptr, kPtracerError},
      {"ptracer-skip", no_argument, nullptr, kPtracerSkip},
      {"kmsg-none", no_argument, nullptr, kKmsgNone},
      {"kmsg-error", no_argument, nullptr, kKmsgError},
      {"kmsg-warning", no_argument, nullptr, kKmsgWarning},
      {"time", required_argument, nullptr, 't'},
      {"json", no_argument, nullptr, kJson},
      {"compress", required_argument, nullptr, kCompress},
      {"cow", no_argument, nullptr, kCow},
      {"no-cow", no_argument, nullptr, kNoCow},
      {"workers", required_argument, nullptr, kWorkers},
      {"libcr-report", required_argument, nullptr, kLibcrReport},
      {"libcr-requester", required_argument, nullptr, kLibcrRequester},
      {nullptr, 0, nullptr, 0}};
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "vqh?TpgscF:f:d:S:t:", longopts, nullptr)) != -1) {
    switch (c) {
      case 'v':
        crkit::log::set_threshold(crkit::log::Level::Verbose);
        break;
      case 'q':
        crkit::log::set_threshold(crkit::log::Level::Quiet);
        break;
      case 'h':
        usage(stdout);
        std::exit(0);
      case '?':
        if (optopt == 0 && argv[optind - 1] && (!std::strcmp(argv[optind - 1], "-?"))) {
          usage(stdout);
          std::exit(0);
        }
        usage_error(quiet, fmt::format("invalid option '{}'", argv[optind - 1]));
      case kVersion:
        std::printf("cr_checkpoint (crkit) %s\n", CRKIT_VERSION);
        std::exit(0);
      case 'T':
        o.scope = crkit::engine::Scope::Tree;
        break;
      case 'p':
        o.scope = crkit::engine::Scope::Proc;
        break;
      case 'g':
        o.scope = crkit::engine::Scope::Pgrp;
        break;
      case 's':
        o.scope = crkit::engine::Scope::Sess;
        break;
      case 'c':
        ++o.destinations;
        break;
      case 'f':
        ++o.destinations;
        o.file = optarg;
        break;
      case 'F': {
        ++o.destinations;
        char* end = nullptr;
        long v = std::strtol(optarg, &end, 10);
        if (!end || *end || v < 0)
          usage_error(quiet, fmt::format("invalid file descriptor '{}'", optarg));
        o.dest_fd = static_cast<int>(v);
        break;
      }
      case 'd':
        if (!quiet) std::fprintf(stderr, "cr_checkpoint: --dir is not implemented (as in BLCR)\n");
        std::exit(EINVAL);
      case kAtomic:
        o.policy = FilePolicy::Atomic;
        break;
      case kBackup:
        o.policy = FilePolicy::Backup;
        o.backup_name = optarg ? optarg : "";
        break;
      case kClobber:
        o.policy = FilePolicy::Clobber;
        break;
      case kNoClobber:
        o.policy = FilePolicy::NoClobber;
        break;
      case 'S':
        if (!crkit::tools::parse_signal_number(optarg, &o.signal))
          usage_error(quiet, fmt::format("invalid signal number '{}'", optarg));
        break;
      case kSync:
        o.sync = true;
        break;
      case kNoSync:
        o.sync = false;
        break;
      case kSaveExe:
      case kSavePrivate:
      case kSaveShared:
      case kSaveAll:
      case kSaveNone:
        // crkit always saves what is needed; by-reference mappings are checked at restart.
        break;
      case kPtracedError:
      case kPtracedAllow:
        o.ptraced_skip = false;
        break;
      case kPtracedSkip:
        o.ptraced_skip = true;
        break;
      case kPtracerError:
      case kPtracerSkip:
      case kKmsgNone:
      case kKmsgError:
      case kKmsgWarning:
        break;
      case 't': {
        char* end = nullptr;
        long v = std::strtol(optarg, &end, 10);
        if (!end || *end || v < 0) usage_error(quiet, fmt::format("invalid time '{}'", optarg));
        o.timeout = static_cast<unsigned>(v);
        break;
      }
      case kJson:
        o.json = true;
        break;
      case kCompress: {
        auto spec = crkit::image::parse_compression(optarg);
        if (!spec) usage_error(quiet, spec.error().message);  // a bad value, like --time
        o.compression = *spec;
        break;
      }
      case kCow:
        o.cow = 1;
        break;
      case kNoCow:
        o.cow = 0;
        break;
      case kWorkers: {
        char* end = nullptr;
        long v = std::strtol(optarg, &end, 10);
        if (!end || *end || v < 1 || v > 64)
          usage_error(quiet, fmt::format("invalid number of workers '{}' (1..64)", optarg));
        o.workers = static_cast<unsigned>(v);
        break;
      }
      case kLibcrReport:
        o.libcr_report = std::atoi(optarg);
        break;
      case kLibcrRequester:
        o.libcr_requester = static_cast<pid_t>(std::atoi(optarg));
        break;
      default:
        if (int sig = crkit::tools::signal_of_option(c); sig >= 0) {
          o.signal = sig;  // --run/--stop/--term/--abort/--kill/--cont: last one wins
          break;
        }
        usage_error(quiet, "");
    }
  }
  // A snapshot lets the processes run on while their memory is written: only right when they
  // are meant to continue.
  const bool continues = o.signal == 0 || o.signal == SIGCONT;
  if (o.cow == 1 && !continues) {
    if (!quiet)
      std::fprintf(stderr,
                   "cr_checkpoint: --cow: the processes must continue after the checkpoint "
                   "(--run or --cont); with --stop, --term, --abort, --kill or --signal they "
                   "stay frozen until the image is written\n");
    std::exit(EINVAL);
  }
  if (o.cow < 0) o.cow = continues ? 1 : 0;
  if (o.destinations > 1) {
    if (!quiet) std::fprintf(stderr, "cr_checkpoint: only one destination may be given\n");
    std::exit(EINVAL);
  }
  if (optind != argc - 1)
    usage_error(quiet, optind >= argc ? "missing process ID" : "too many arguments");
  char* end = nullptr;
  long id = std::strtol(argv[optind], &end, 10);
  if (!end || *end || id <= 0 || id > 0x3fffffff)
    usage_error(quiet, fmt::format("invalid ID '{}'", argv[optind]));
  o.id = static_cast<pid_t>(id);
  if (o.dest_fd < 0 && o.file.empty()) o.file = fmt::format("context.{}", o.id);
  return o;
}

// Where the image goes and how it gets its final name.
class Destination {
 public:
  static Result<Destination> open(const Options& o) {
    Destination d;
    if (o.dest_fd >= 0) {
      struct stat st {};
      if (::fstat(o.dest_fd, &st) < 0)
        return crkit::fail_errno(fmt::format("file descriptor {}", o.dest_fd));
      if (S_ISDIR(st.st_mode))
        return crkit::fail(EISDIR, fmt::format("file descriptor {} is a directory", o.dest_fd));
      d.fd_ = o.dest_fd;
      d.name_ = fmt::format("<fd{}>", o.dest_fd);
      return d;
    }
    d.final_ = o.file;
    d.name_ = o.file;
    struct stat st {};
    if (::stat(o.file.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      return crkit::fail(EISDIR, fmt::format("{} is a directory", o.file));
    const int flags = O_WRONLY | O_CREAT | O_NOCTTY | O_CLOEXEC;
    switch (o.policy) {
      case FilePolicy::Atomic:
      case FilePolicy::Backup: {
        // A unique temporary name: concurrent checkpoints to the same file must not write
        // into each other's temporary file. The last rename wins; each image is complete.
        auto slash = o.file.rfind('/');
        std::string dir = slash == std::string::npos ? "" : o.file.substr(0, slash + 1);
        std::string base = slash == std::string::npos ? o.file : o.file.substr(slash + 1);
        std::string tmpl = dir + "." + base + ".tmp.XXXXXX";
        d.fd_ = ::mkostemp(tmpl.data(), O_CLOEXEC);
        if (d.fd_ < 0)
          return crkit::fail_errno(
              fmt::format("creating checkpoint file {} (temporary {})", o.file, tmpl));
        d.owned_.reset(d.fd_);
        d.temp_ = tmpl;
        if (::fchmod(d.fd_, 0400) < 0)
          return crkit::fail_errno(fmt::format(
              "creating checkpoint file {} (temporary {}): setting mode 0400", o.file, tmpl));
        break;
      }
      case FilePolicy::Clobber: {
        if (::access(o.file.c_str(), F_OK) == 0 && ::access(o.file.c_str(), W_OK) != 0)
          ::unlink(o.file.c_str());
        CRKIT_TRY(d.open_clobber(o.file, flags));
        break;
      }
      case FilePolicy::NoClobber:
        // Only a file we created is ours to remove on failure, never an existing one.
        d.fd_ = ::open(o.file.c_str(), flags | O_EXCL, 0400);
        if (d.fd_ < 0) return crkit::fail_errno(fmt::format("creating checkpoint file {}", o.file));
        d.owned_.reset(d.fd_);
        d.created_ = o.file;
        if (::fchmod(d.fd_, 0400) < 0)
          return crkit::fail_errno(fmt::format("setting mode 0400 on checkpoint file {}", o.file));
        break;
    }
    d.backup_ = o.policy == FilePolicy::Backup;
    d.backup_name_ = o.backup_name;
    return d;
  }

  int fd() const { return fd_; }
  const std::string& name() const { return name_; }
  const std::string& final_path() const { return final_; }

  // Makes the written image durable (a no-op without --sync or for a pipe or socket).
  Status sync_data(bool sync) {
    if (sync && ::fsync(fd_) < 0 && errno != EINVAL && errno != EROFS)
      return crkit::fail_errno(fmt::format("syncing {}", name_));
    return {};
  }

  // Gives the image its final name (keeping the old file with --backup); after this the image
  // is the user's and abandon() no longer removes it.
  Status publish(bool sync) {
    if (!temp_.empty()) {
      if (backup_ && ::access(final_.c_str(), F_OK) == 0) {
        std::string b = backup_name_;
        for (int n = 1; b.empty(); ++n) {
          std::string cand = fmt::format("{}.~{}~", final_, n);
          if (::access(cand.c_str(), F_OK) != 0) b = cand;
        }
        if (::rename(final_.c_str(), b.c_str()) < 0)
          return crkit::fail_errno(fmt::format("keeping the old {} as {}", final_, b));
      }
      if (::rename(temp_.c_str(), final_.c_str()) < 0)
        return crkit::fail_errno(fmt::format("renaming {} to {}", temp_, final_));
      temp_.clear();
    }
    created_.clear();
    if (sync && !final_.empty()) {
      auto slash = final_.rfind('/');
      std::string dir = slash == std::string::npos ? "." : final_.substr(0, slash + 1);
      UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (dfd) ::fsync(dfd.get());
    }
    return {};
  }

  // A failed checkpoint leaves no partial file behind.
  void abandon() {
    if (!temp_.empty()) ::unlink(temp_.c_str());
    if (!created_.empty()) ::unlink(created_.c_str());
    temp_.clear();
    created_.clear();
  }
  ~Destination() { abandon(); }
  Destination(Destination&&) = default;
  Destination& operator=(Destination&&) = default;

 private:
  Destination() = default;

  // --clobber: overwrite path in place. A regular file ends up with mode 0400 like every
  // image; one we may write but not chmod (someone else's) is replaced by a file of our own,
  // as a read-only one is. Anything else (a FIFO, a device) is written to as it is and never
  // removed on failure.
  Status open_clobber(const std::string& path, int flags) {
    UniqueFd fd(::open(path.c_str(), flags, 0400));
    if (!fd) return crkit::fail_errno(fmt::format("creating checkpoint file {}", path));
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0)
      return crkit::fail_errno(fmt::format("checkpoint file {}", path));
    if (S_ISREG(st.st_mode)) {
      if (::fchmod(fd.get(), 0400) < 0) {
        if (errno != EPERM)
          return crkit::fail_errno(fmt::format("setting mode 0400 on checkpoint file {}", path));
        fd.reset();
        if (::unlink(path.c_str()) < 0)
          return crkit::fail_errno(fmt::format("replacing checkpoint file {}", path));
        fd.reset(::open(path.c_str(), flags | O_EXCL, 0400));
        if (!fd) return crkit::fail_errno(fmt::format("creating checkpoint file {}", path));
        if (::fchmod(fd.get(), 0400) < 0)
          return crkit::fail_errno(fmt::format("setting mode 0400 on checkpoint file {}", path));
      }
      if (::ftruncate(fd.get(), 0) < 0)
        return crkit::fail_errno(fmt::format("truncating checkpoint file {}", path));
      created_ = path;
    }
    fd_ = fd.get();
    owned_ = std::move(fd);
    return {};
  }

  int fd_ = -1;
  UniqueFd owned_;
  std::string name_, final_, temp_, created_, backup_name_;
  bool backup_ = false;
};

// Signals that would kill cr_checkpoint. Dying in the middle of a remote system call in the
// frozen target would leave it with clobbered registers (the kernel detaches it as it is), so
// they are blocked from before the target is frozen until it is released; the checkpoint polls
// for them between pieces of work, cancels (releasing the target untouched) and afterwards
// cr_checkpoint dies of the signal, so that its caller sees what happened. Only signals that
// would have killed us count: ones the caller left ignored or blocked stay that way.
class TerminatingSignals {
 public:
  // include_alarm: SIGALRM too (it is the -t timer's when a time limit is given).
  void block(bool include_alarm) {
    sigemptyset(&set_);
    sigset_t inherited;
    ::sigprocmask(SIG_BLOCK, nullptr, &inherited);
    auto add = [&](int sig) {
      struct sigaction sa {};
      if (::sigaction(sig, nullptr, &sa) < 0) return;
      if (sa.sa_handler != SIG_DFL || sigismember(&inherited, sig)) return;
      sigaddset(&set_, sig);
    };
    for (int sig : {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGXCPU, SIGXFSZ, SIGVTALRM,
                    SIGPROF, SIGSTKFLT, SIGPWR})
      add(sig);
    if (include_alarm) add(SIGALRM);
    for (int sig = SIGRTMIN; sig <= SIGRTMAX; ++sig) add(sig);
    ::sigprocmask(SIG_BLOCK, &set_, nullptr);
  }

  // The lowest-numbered one of them that is pending, or 0.
  int pending() const {
    sigset_t p;
    if (::sigpending(&p) < 0) return 0;
    for (int sig = 1; sig < NSIG; ++sig)
      if (sigismember(&set_, sig) == 1 && sigismember(&p, sig) == 1) return sig;
    return 0;
  }

  // Lets the pending signal sig take its default action: terminate cr_checkpoint. Called only
  // once the target has been released (or killed) and partial files removed.
  [[noreturn]] static void die_of(int sig) {
    std::fflush(stdout);
    std::fflush(stderr);
    ::signal(sig, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    ::sigprocmask(SIG_UNBLOCK, &one, nullptr);  // delivered here
    ::raise(sig);
    ::_exit(128 + sig);
  }

 private:
  sigset_t set_{};
};

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  if (abbrev) return fmt::format("SIG{}", abbrev);
  return fmt::format("signal {}", sig);
}

int fail_exit(const Options& o, const Error& e) {
  crkit::log::error("checkpoint failed: {}", e.message);
  report_line(o, fmt::format("RESULT {} 0\ncheckpoint failed: {}\n", e.code, e.message));
  int code = crkit::exit_code_of(e.code);
  return code ? code : 1;
}

// cr_get_checkpoint_info()->dest: the canonical path the image will have.
std::string canonical_dest(const Destination& d) {
  std::string path = d.final_path();
  if (path.empty()) {  // -F: the file behind the descriptor, if it is one
    struct stat st {};
    if (::fstat(d.fd(), &st) < 0 || !S_ISREG(st.st_mode)) return "";
    path = fmt::format("/proc/self/fd/{}", d.fd());
    char* real = ::realpath(path.c_str(), nullptr);
    std::string out = real && real[0] == '/' ? real : "";
    std::free(real);
    return out;
  }
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  char* real = ::realpath(dir.c_str(), nullptr);
  if (!real) return path;
  std::string out = std::string(real) + (std::string(real) == "/" ? "" : "/") + base;
  std::free(real);
  return out;
}

// The checkpoint proper. Every way out of here has released (or, for --kill, killed) the target
// and removed any partial file; main() then lets a pending terminating signal end us.
int checkpoint(const Options& o, const TerminatingSignals& term) {
  auto t0 = std::chrono::steady_clock::now();
  // What the request names, in words: "process 42", "process group 42", ...
  const std::string what = fmt::format(
      "{} {}",
      o.scope == crkit::engine::Scope::Tree ? "process" : crkit::resources::scope_name(o.scope),
      o.id);
  if (Status ok = crkit::engine::check_request(o.scope, o.id); !ok) return fail_exit(o, ok.error());
  auto dest = Destination::open(o);
  if (!dest) return fail_exit(o, dest.error());

  // A signal before the image is complete and has its final name cancels the checkpoint: the
  // target is released untouched and the partial file removed.
  auto cancelled_by = [&](int sig) {
    crkit::log::error("checkpoint of {} cancelled by {}; the processes were left running", what,
                      signal_name(sig));
    report_line(o,
                fmt::format("RESULT {} 0\ncheckpoint cancelled by {}\n", EINTR, signal_name(sig)));
    return 128 + sig;
  };
  if (int sig = term.pending()) {  // before anything is frozen
    dest->abandon();
    return cancelled_by(sig);
  }

  crkit::image::ImageWriter writer(dest->fd(), dest->name());
  // The image will be fsync()ed: let the disk write while memory is still being captured.
  if (o.sync) writer.set_write_behind(64ull << 20);
  crkit::tools::Progress progress(
      ::isatty(2) && crkit::log::threshold() >= crkit::log::Level::Normal, "cr_checkpoint");
  crkit::engine::CheckpointOptions copts;
  copts.request.requester = o.libcr_requester > 0 ? o.libcr_requester : ::getpid();
  copts.request.signal = o.signal;
  copts.request.dest = canonical_dest(*dest);
  if (o.timeout) copts.deadline = t0 + std::chrono::seconds(o.timeout);
  copts.on_requested = [&](uint32_t seq) { report_line(o, fmt::format("STARTED {}\n", seq)); };
  copts.pipeline.compression = o.compression;
  copts.pipeline.workers = o.workers;
  copts.cow = o.cow == 1;
  if (struct stat st{}; ::fstat(dest->fd(), &st) == 0 && S_ISREG(st.st_mode))
    copts.image_file = crkit::image::FileIdentity{static_cast<uint64_t>(st.st_dev),
                                                  static_cast<uint64_t>(st.st_ino)};
  auto ck = crkit::engine::checkpoint(
      o.scope, o.id, writer,
      [&](uint64_t d, uint64_t t) {
        progress(d, t);
        return g_timed_out == 0 && term.pending() == 0;
      },
      copts);
  // The progress callback runs only between chunks of memory: look again now.
  if (int sig = term.pending()) {
    if (ck) ck->frozen.release();  // on error the engine has released it already
    dest->abandon();
    return cancelled_by(sig);
  }
  if (ck && g_timed_out) {
    dest->abandon();
    ck->frozen.release();
    return fail_exit(
        o, Error{ETIMEDOUT,
                 fmt::format("checkpoint of {} exceeded the time limit of {}s", what, o.timeout)});
  }
  if (!ck && g_timed_out) {
    dest->abandon();
    return fail_exit(o, Error{ETIMEDOUT, fmt::format("checkpoint of {} exceeded the time limit of "
                                                     "{}s: {}",
                                                     what, o.timeout, ck.error().message)});
  }
  if (!ck) {
    dest->abandon();
    if (o.ptraced_skip && ck.error().code == crkit::kCrEPtraced)
      return fail_exit(o, Error{ESRCH, "no processes checkpointed: " + ck.error().message});
    return fail_exit(o, ck.error());
  }
  Status committed = dest->sync_data(o.sync);
  if (int sig = term.pending()) {  // fsync of a large image takes a while
    ck->frozen.release();
    dest->abandon();
    return cancelled_by(sig);
  }
  if (committed) committed = dest->publish(o.sync);
  if (!committed) {
    dest->abandon();
    return fail_exit(
        o,
        committed.error());  // ck goes out of scope: the targets are released untouched
  }
  auto t_dumped = std::chrono::steady_clock::now();
  const std::vector<pid_t> pids = ck->pids;
  if (o.signal == SIGKILL) {
    ck->frozen.kill_frozen();
  } else {
    ck->frozen.release();
    // libcr processes continue: their callbacks finish before the signal comes.
    ck->libcr.finish(crkit::libcr::kOutcomeContinue, 0, copts.deadline);
    if (o.signal)  // BLCR: to every process of the checkpoint
      for (pid_t p : pids) ::kill(p, o.signal);
  }
  const std::string file = dest->final_path().empty() ? dest->name() : dest->final_path();
  // The image is complete and in place; a signal that came since still decides our status.
  if (int sig = term.pending()) {
    crkit::log::error("checkpointed {} into {}, then received {}", what, file, signal_name(sig));
    return 128 + sig;
  }
  auto t1 = std::chrono::steady_clock::now();
  // Frozen time: from the first freeze until the processes ran again (plus the short second
  // freeze that reaps a snapshot).
  double frozen = ck->stats.cow
                      ? ck->stats.frozen_seconds + ck->stats.reap_frozen_seconds
                      : std::chrono::duration<double>(t_dumped - ck->stats.freeze_start).count();
  double total = std::chrono::duration<double>(t1 - t0).count();
  crkit::log::info(
      "checkpointed {} ({} processes, {} threads, {} pages, {} zero pages skipped, {} fds) into "
      "{}: {} bytes in {:.3f}s",
      what, ck->stats.processes, ck->stats.threads, ck->stats.pages_written,
      ck->stats.zero_pages_skipped, ck->stats.fds, dest->name(), ck->stats.image_bytes, total);
  report_line(o, fmt::format("RESULT 0 0\ncheckpointed {} into {}\n", what, file));
  if (o.json) {
    nlohmann::json j = {{"pid", o.id},
                        {"scope", crkit::resources::scope_name(o.scope)},
                        {"file", file},
                        {"image_bytes", ck->stats.image_bytes},
                        {"processes", ck->stats.processes},
                        {"pids", pids},
                        {"zombies_skipped", ck->zombies},
                        {"omitted", ck->omitted},
                        {"threads", ck->stats.threads},
                        {"pages_written", ck->stats.pages_written},
                        {"zero_pages_skipped", ck->stats.zero_pages_skipped},
                        {"fds", ck->stats.fds},
                        {"compression", crkit::image::to_string(o.compression)},
                        {"cow", ck->stats.cow},
                        {"workers", ck->stats.workers},
                        {"memory_bytes", ck->stats.memory_bytes},
                        {"stored_bytes", ck->stats.stored_bytes},
                        {"frozen_seconds", frozen},
                        {"snapshot_reap_seconds", ck->stats.reap_frozen_seconds},
                        // Until the first freeze: libcr callbacks (an MPI library's channel
                        // drain) run before anything is frozen.
                        {"quiesce_seconds",
                         std::chrono::duration<double>(ck->stats.freeze_start - t0).count()},
                        {"total_seconds", total}};
    std::printf("%s\n", j.dump(2).c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  crkit::log::set_program("cr_checkpoint");
  Options o = parse(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  // Before anything is frozen: from here on a terminating signal only cancels the checkpoint.
  TerminatingSignals term;
  term.block(o.timeout == 0);
  if (o.timeout) {
    // The time limit is checked between pieces of work, never in the middle of a remote call,
    // so running out of time releases the target untouched.
    struct sigaction sa {};
    sa.sa_handler = [](int) { g_timed_out = 1; };
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGALRM, &sa, nullptr);
    ::alarm(o.timeout);
  }
  int rc = checkpoint(o, term);
  // The target is released and partial files are gone: a terminating signal that arrived
  // meanwhile now ends us, so that our caller sees it.
  if (int sig = term.pending()) TerminatingSignals::die_of(sig);
  return rc;
}
