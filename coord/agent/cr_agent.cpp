// cr_agent — the node agent of a coordinated MPI job: one per node per job, started by
// cr_mpirun / cr_mpirestart through the launcher (ssh, or `ip netns exec` in tests).
//
// It plays the process-manager role MPICH's checkpoint code expects (mpich-checkpointing.md):
// it launches the node's ranks as its children in one process group, with PMI_PORT/PMI_ID,
// serves PMI-1 for them (job-wide fences go through the coordinator), checkpoints them into
// one node image with cr_checkpoint (they share memory, so they are dumped together), and on
// restart serves a fresh PMI key space, writes the env files MPICH reads
// (/tmp/hydra-env-file-<requester>:<rank>), relays the stdio sockets the restarted ranks
// connect back to, and restarts them with cr_restart. It is a child subreaper, so restarted
// ranks become its children. Losing the coordinator kills the ranks: no orphaned job.
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "common/loopback_peer.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "pmi/pmi_server.hpp"
#include "protocol/channel.hpp"
#include "protocol/token.hpp"
#include "snapshot/manifest.hpp"

extern char** environ;

namespace {

using crkit::Error;
using crkit::Result;
using crkit::Status;
using crkit::UniqueFd;
using crkit::coord::Channel;
using crkit::coord::Json;
using Clock = std::chrono::steady_clock;

std::string self_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

// cr_checkpoint and cr_restart: CRKIT_TOOLS_DIR, our own directory (installed: one bin
// directory), the build tree's node/tools next to our bin, else PATH.
std::string tool_path(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* d = ::getenv("CRKIT_TOOLS_DIR")) dirs.emplace_back(d);
  const std::string self = self_dir();
  dirs.push_back(self);
  dirs.push_back(self + "/../node/tools");
  for (const auto& d : dirs) {
    std::string p = d + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return name;
}

// A helper program we run (cr_checkpoint, cr_restart), its stdout and stderr collected.
struct Tool {
  enum class Kind { Checkpoint, Restart } kind;
  pid_t pid = 0;
  UniqueFd out, err;
  std::string out_text, err_text;
  Clock::time_point started = Clock::now();
  int tag = -1;  // checkpoint: the rank of a per-rank image; restart: the image index
};

Result<Tool> spawn_tool(Tool::Kind kind, const std::vector<std::string>& argv,
                        const sigset_t& child_mask) {
  int po[2], pe[2];
  if (::pipe2(po, O_CLOEXEC) < 0) return crkit::fail_errno("creating a pipe");
  UniqueFd por(po[0]), pow(po[1]);
  if (::pipe2(pe, O_CLOEXEC) < 0) return crkit::fail_errno("creating a pipe");
  UniqueFd per(pe[0]), pew(pe[1]);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return crkit::fail_errno("fork");
  if (pid == 0) {
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) ::signal(sig, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &child_mask, nullptr);
    ::dup2(pow.get(), 1);
    ::dup2(pew.get(), 2);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  Tool t{kind, pid, std::move(por), std::move(per), {}, {}, Clock::now(), -1};
  ::fcntl(t.out.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(t.err.get(), F_SETFL, O_NONBLOCK);
  return t;
}

void drain(UniqueFd& fd, std::string& into) {
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n > 0) {
      into.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) fd.reset();
    return;
  }
}

std::string last_line(const std::string& text) {
  std::string t = text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  auto nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

std::string status_text(int st) {
  if (WIFEXITED(st)) return fmt::format("exit status {}", WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return fmt::format("signal {} ({})", WTERMSIG(st), strsignal(WTERMSIG(st)));
  return fmt::format("status {:#x}", st);
}

// The fence of the PMI server's thread is forwarded by the main loop: fence() queues the puts
// and wakes the loop; the coordinator's fence_done completes it.
class CoordFence final : public crkit::pmi::FenceBackend {
 public:
  explicit CoordFence(int wake_fd) : wake_(wake_fd) {}
  void fence(crkit::pmi::KeyValues puts, Done done) override {
    {
      std::lock_guard lock(mu_);
      queued_.push_back(std::move(puts));
      pending_.push_back(std::move(done));
    }
    uint64_t one = 1;
    (void)!::write(wake_, &one, sizeof one);
  }
  std::vector<crkit::pmi::KeyValues> take_queued() {
    std::lock_guard lock(mu_);
    std::vector<crkit::pmi::KeyValues> out(queued_.begin(), queued_.end());
    queued_.clear();
    return out;
  }
  void complete(Result<crkit::pmi::KvsMap> kvs) {
    Done d;
    {
      std::lock_guard lock(mu_);
      if (pending_.empty()) return;
      d = std::move(pending_.front());
      pending_.pop_front();
    }
    d(std::move(kvs));
  }
  void fail_all(const std::string& why) {
    for (;;) {
      Done d;
      {
        std::lock_guard lock(mu_);
        if (pending_.empty()) return;
        d = std::move(pending_.front());
        pending_.pop_front();
      }
      d(crkit::fail(ECONNRESET, why));
    }
  }

 private:
  int wake_;
  std::mutex mu_;
  std::deque<crkit::pmi::KeyValues> queued_;
  std::deque<Done> pending_;
};

// The stdio sockets a restarted MPICH rank connects to CKPOINT_STDINOUTERR_PORT: each starts
// with {int rank; int socktype (0 in, 1 out, 2 err); int pid;}, then carries the stream.
struct StdioConn {
  UniqueFd fd;
  std::string ident;  // the 12 header bytes, until complete
  int type = -1;
  int rank = -1;
};

struct Options {
  crkit::coord::Endpoint coord;
  std::string job;
  int node = -1;
  std::string token;  // the coordinator's, from the first line of stdin (--token-stdin)
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(
      stderr,
      "cr_agent: %s\nusage: cr_agent --coord HOST:PORT --job JOB --node K --token-stdin [-v]\n"
      "(started by cr_mpirun and cr_mpirestart on every node of a job)\n",
      msg.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  static const struct option longs[] = {{"coord", required_argument, nullptr, 'c'},
                                        {"job", required_argument, nullptr, 'j'},
                                        {"node", required_argument, nullptr, 'n'},
                                        {"verbose", no_argument, nullptr, 'v'},
                                        {"token-stdin", no_argument, nullptr, 's'},
                                        {"help", no_argument, nullptr, 'h'},
                                        {nullptr, 0, nullptr, 0}};
  int v = 0;
  bool token_stdin = false;
  for (int c; (c = ::getopt_long(argc, argv, "c:j:n:vh", longs, nullptr)) != -1;) {
    switch (c) {
      case 'c': {
        auto ep = crkit::coord::parse_endpoint(optarg);
        if (!ep) usage_error("--coord: " + ep.error().message);
        o.coord = *ep;
        break;
      }
      case 'j':
        o.job = optarg;
        break;
      case 'n':
        o.node = std::atoi(optarg);
        break;
      case 'v':
        ++v;
        break;
      case 's':
        token_stdin = true;
        break;
      case 'h':
        usage_error("help");
      default:
        usage_error("bad option");
    }
  }
  if (o.coord.port == 0 || o.job.empty() || o.node < 0 || !token_stdin)
    usage_error("--coord, --job, --node and --token-stdin are required");
  // The launcher (ssh, ...) forwards the stdin cr_mpirun gave it: the token, then EOF.
  auto token = crkit::coord::read_token_line(0, 30000, "cr_agent --token-stdin");
  if (!token) {
    std::fprintf(stderr, "cr_agent: %s\n", token.error().message.c_str());
    std::exit(2);
  }
  o.token = std::move(*token);
  if (int null = ::open("/dev/null", O_RDONLY); null >= 0) {
    ::dup2(null, 0);
    if (null != 0) ::close(null);
  }
  crkit::log::set_threshold(v >= 2   ? crkit::log::Level::Debug
                            : v == 1 ? crkit::log::Level::Verbose
                                     : crkit::log::Level::Normal);
  return o;
}

class Agent {
 public:
  explicit Agent(Options o) : o_(std::move(o)) {}
  int run();

 private:
  Status setup_signals();
  Status handle_start(const Json& m);
  Status launch();
  Status start_restart(size_t image, bool new_pidns);
  Status start_pmi();
  Status write_env_files(int stdio_port);
  void on_coord_message(const Json& m);
  void on_checkpoint(const Json& m);
  void on_prepare(const Json& m);
  struct ImageJob {
    std::string path;
    std::vector<std::string> scope;  // cr_checkpoint's --group PGID or --pid PID
    int rank = -1;                   // a per-rank image's rank
  };
  Result<std::vector<ImageJob>> plan_images(const Json& m);
  void on_tool_exit(Tool& t, int st);
  void on_child_exit(pid_t pid, int st);
  void accept_stdio();
  void service_stdio(size_t i);
  void kill_ranks(int sig);
  void send(const Json& m);
  void check_done();

  Options o_;
  Channel coord_;
  UniqueFd sigfd_, wake_;
  sigset_t old_mask_{};
  std::string host_;
  // From the coordinator's start message.
  Json start_;
  std::vector<int> ranks_;
  int nranks_ = 0;
  std::string kvsname_;
  bool restart_mode_ = false;
  std::string pid_namespace_ = "auto";
  std::shared_ptr<CoordFence> fence_;
  std::unique_ptr<crkit::pmi::PmiServer> pmi_;
  UniqueFd stdio_listen_;
  std::vector<StdioConn> stdio_;
  // The ranks (or, restarted in a PID namespace, its init) as our children.
  std::map<pid_t, int> known_;  // pid -> rank (-1: not a rank itself)
  pid_t pgid_ = 0;
  bool pidns_ = false;
  bool running_ = false;  // ranks launched/restarted
  std::vector<Tool> tools_;
  // The checkpoint in progress.
  // One image for the node's process group, or (all traffic over TCP) one per rank.
  struct Ckpt {
    uint64_t seq = 0;
    bool term = false;
    bool aborted = false;
    std::string abort_reason;
    std::string error;  // the first failure
    int pending = 0;    // cr_checkpoint runs not yet ended
    std::vector<std::string> paths;
    Json images = Json::array();
    double quiesce_ms = 0, dump_ms = 0;
  };
  void finish_checkpoint();
  bool per_rank_ = false;
  std::vector<bool> image_pidns_;  // restart: image i went into a new PID namespace
  std::optional<Ckpt> ckpt_;
  bool terminating_ = false;  // a --term snapshot killed the ranks on purpose
  int exit_status_ = 0;
  std::string exit_message_;
  bool done_ = false;
  bool reported_ = false;  // "exited" was sent
};

void Agent::send(const Json& m) {
  if (Status s = coord_.send(m); !s) crkit::log::error("node {}: {}", o_.node, s.error().message);
}

Status Agent::setup_signals() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) {
    sigaddset(&mask, s);
    ::signal(s, SIG_DFL);  // a launcher may have left them ignored (nohup)
  }
  if (::sigprocmask(SIG_BLOCK, &mask, &old_mask_) < 0) return crkit::fail_errno("sigprocmask");
  sigfd_.reset(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd_) return crkit::fail_errno("signalfd");
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_) return crkit::fail_errno("eventfd");
  ::signal(SIGPIPE, SIG_IGN);
  // Restarted ranks are first the children of cr_restart; when it exits they come to us.
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) return crkit::fail_errno("PR_SET_CHILD_SUBREAPER");
  return {};
}

Status Agent::start_pmi() {
  crkit::pmi::ServerConfig cfg;
  cfg.bind_address = "127.0.0.1";  // the ranks are on this node
  cfg.job_size = nranks_;
  cfg.kvsname = kvsname_;
  cfg.local_ranks = std::set<int>(ranks_.begin(), ranks_.end());
  if (start_.contains("ppn_map") && start_["ppn_map"].is_string())
    cfg.job_attributes["PMI_process_mapping"] = start_["ppn_map"].get<std::string>();
  fence_ = std::make_shared<CoordFence>(wake_.get());
  crkit::pmi::ServerEvents ev;
  ev.on_rank_exit = [this](const crkit::pmi::RankExit& e) {
    if (e.kind == crkit::pmi::RankExit::Kind::Aborted)
      crkit::log::error("node {} ({}): rank {} called MPI_Abort (exit code {})", o_.node, host_,
                        e.rank, e.exit_code);
  };
  CRKIT_ASSIGN(pmi_, crkit::pmi::PmiServer::start(cfg, fence_, ev));
  return {};
}

Status Agent::launch() {
  CRKIT_TRY(start_pmi());
  std::vector<std::string> argv = start_["argv"].get<std::vector<std::string>>();
  if (argv.empty()) return crkit::fail(EINVAL, "no program to launch");
  std::vector<std::string> base;
  for (auto& [k, v] : start_["env"].items())
    if (k.rfind("PMI_", 0) != 0) base.push_back(k + "=" + v.get<std::string>());
  const std::string cwd = start_.value("cwd", std::string("/"));
  for (int r : ranks_) {
    std::vector<std::string> env = base;
    env.push_back("PMI_PORT=" + pmi_->pmi_port());
    env.push_back(fmt::format("PMI_ID={}", r));
    std::vector<char*> envp, args;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) return crkit::fail_errno(fmt::format("starting rank {}", r));
    if (pid == 0) {
      ::setpgid(0, pgid_);
      ::sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
      ::signal(SIGPIPE, SIG_DFL);
      for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::signal(sig, SIG_DFL);
      int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (devnull >= 0) ::dup2(devnull, 0);
      if (::chdir(cwd.c_str()) < 0) {
        std::fprintf(stderr, "cr_agent: rank %d: cannot enter %s: %s\n", r, cwd.c_str(),
                     std::strerror(errno));
        ::_exit(127);
      }
      environ = envp.data();
      ::execvp(args[0], args.data());
      std::fprintf(stderr, "cr_agent: rank %d: cannot run %s: %s\n", r, args[0],
                   std::strerror(errno));
      ::_exit(127);
    }
    ::setpgid(pid, pgid_);  // both sides: whichever runs first
    if (pgid_ == 0) pgid_ = pid;
    known_[pid] = r;
  }
  running_ = true;
  Json pids = Json::array();
  for (auto& [p, r] : known_) pids.push_back(p);
  send({{"op", "started"}, {"pids", pids}});
  crkit::log::info("node {} ({}): launched ranks {} (process group {})", o_.node, host_,
                   Json(ranks_).dump(), pgid_);
  return {};
}

Status Agent::write_env_files(int stdio_port) {
  for (int r : ranks_) {
    const std::string path = fmt::format("/tmp/hydra-env-file-{}:{}", ::getpid(), r);
    ::unlink(path.c_str());
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) return crkit::fail_errno("creating " + path);
    // MPICH caches its host name from the first start; the restarted TCP netmod publishes
    // the address of the name it reads here instead (per rank, read at reconnect time).
    std::string text =
        fmt::format("PMI_PORT={}\nCKPOINT_STDINOUTERR_PORT={}\nMPICH_INTERFACE_HOSTNAME_R{}={}\n",
                    pmi_->pmi_port(), stdio_port, r, host_);
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
      return crkit::fail_errno("writing " + path);
  }
  return {};
}

Status Agent::start_restart(size_t i, bool new_pidns) {
  const Json& img = start_["images"].at(i);
  const std::string image = img.at("path").get<std::string>();
  std::vector<std::string> argv = {tool_path("cr_restart"), "--no-wait", "--json",
                                   fmt::format("--libcr-requester={}", ::getpid())};
  if (new_pidns) {
    argv.push_back("--no-restore-pid");
  } else {
    argv.push_back("--restore-pid");
    argv.push_back("--restore-pgid");
  }
  argv.push_back(image);
  CRKIT_ASSIGN(Tool t, spawn_tool(Tool::Kind::Restart, argv, old_mask_));
  t.tag = static_cast<int>(i);
  if (new_pidns) pidns_ = true;
  image_pidns_[i] = new_pidns;
  crkit::log::info("node {} ({}): restarting ranks {} from {}{}", o_.node, host_,
                   img.at("ranks").dump(), image, new_pidns ? " in a new PID namespace" : "");
  tools_.push_back(std::move(t));
  return {};
}

Status Agent::handle_start(const Json& m) {
  start_ = m;
  ranks_ = m.at("ranks").get<std::vector<int>>();
  nranks_ = m.at("nranks").get<int>();
  kvsname_ = m.value("kvsname", std::string("crkit_kvs"));
  restart_mode_ = m.value("mode", std::string("launch")) == "restart";
  pid_namespace_ = m.value("pid_namespace", std::string("auto"));
  per_rank_ = m.value("per_rank_images", false);
  if (!restart_mode_) return launch();
  CRKIT_TRY(start_pmi());
  CRKIT_ASSIGN(stdio_listen_, crkit::coord::listen_tcp("127.0.0.1", 0));
  ::fcntl(stdio_listen_.get(), F_SETFL, O_NONBLOCK);
  CRKIT_TRY(write_env_files(crkit::coord::local_port(stdio_listen_.get())));
  const size_t n = start_["images"].size();
  if (n == 0) return crkit::fail(EINVAL, "the restart names no image");
  image_pidns_.assign(n, false);
  for (size_t i = 0; i < n; ++i) CRKIT_TRY(start_restart(i, pid_namespace_ == "always"));
  return {};
}

void Agent::kill_ranks(int sig) {
  if (pgid_ > 0 && !pidns_ && !known_.empty()) ::kill(-pgid_, sig);
  for (auto& [p, r] : known_) ::kill(p, sig);
}

// What a snapshot dumps on this node — the process group into one image, or every rank into
// its own — with the image directory created; or why the node cannot take part.
Result<std::vector<Agent::ImageJob>> Agent::plan_images(const Json& m) {
  auto no = [&](const std::string& why) {
    return crkit::fail(EAGAIN, fmt::format("node {} ({}): {}", o_.node, host_, why));
  };
  if (ckpt_) return no(fmt::format("checkpoint {} is still running", ckpt_->seq));
  if (!running_ || done_) return no("the ranks are not running");
  if (pidns_)
    return no(
        "the ranks were restarted in a new PID namespace; checkpointing them again is not "
        "supported");
  std::vector<ImageJob> jobs;
  if (per_rank_) {
    for (auto& [pid, rank] : known_)
      if (rank >= 0)
        jobs.push_back({fmt::format("{}/rank-{}.img", m.at("dir").get<std::string>(), rank),
                        {"--pid", std::to_string(pid)},
                        rank});
    if (jobs.size() != ranks_.size())
      return no(fmt::format("{} of its {} ranks are running", jobs.size(), ranks_.size()));
  } else {
    jobs.push_back({m.at("image").get<std::string>(), {"--group", std::to_string(pgid_)}, -1});
  }
  const auto dir = std::filesystem::path(jobs[0].path).parent_path();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return no(fmt::format("creating {}: {}", dir.string(), ec.message()));
  return jobs;
}

// Phase 1 of a snapshot: can this node take part? Nothing is asked of the ranks yet, so a
// "no" here costs the job nothing.
void Agent::on_prepare(const Json& m) {
  const uint64_t seq = m.at("seq").get<uint64_t>();
  auto answer = [&](const std::string& why) {
    send({{"op", "prepared"}, {"seq", seq}, {"ok", why.empty()}, {"error", why}});
  };
  auto jobs = plan_images(m);
  if (!jobs) return answer(jobs.error().message);
  for (const auto& j : *jobs) {
    struct stat sb {};
    if (::lstat(j.path.c_str(), &sb) == 0 && !S_ISREG(sb.st_mode))
      return answer(fmt::format("node {} ({}): the image path {} exists and is not a file", o_.node,
                                host_, j.path));
  }
  // The directory takes a new file (read-only file systems, quotas, permissions).
  const std::string dir = std::filesystem::path((*jobs)[0].path).parent_path().string();
  const std::string probe = fmt::format("{}/.prepare-{}-{}", dir, o_.node, ::getpid());
  UniqueFd fd(::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd)
    return answer(fmt::format("node {} ({}): cannot create files in {}: {}", o_.node, host_, dir,
                              std::strerror(errno)));
  ::unlink(probe.c_str());
  answer("");
}

void Agent::on_checkpoint(const Json& m) {
  const uint64_t seq = m.at("seq").get<uint64_t>();
  auto jobs = plan_images(m);
  if (!jobs) {
    send({{"op", "checkpoint_done"}, {"seq", seq}, {"ok", false}, {"error", jobs.error().message}});
    return;
  }
  const auto parent = std::filesystem::path((*jobs)[0].path).parent_path();
  const bool term = m.value("term", false);
  Ckpt c;
  c.seq = seq;
  c.term = term;
  for (const auto& job : *jobs) {
    std::vector<std::string> argv = {tool_path("cr_checkpoint")};
    argv.insert(argv.end(), job.scope.begin(), job.scope.end());
    argv.insert(argv.end(), {"-f", job.path, "--json"});
    auto t = spawn_tool(Tool::Kind::Checkpoint, argv, old_mask_);
    if (!t) {
      for (auto& other : tools_)
        if (other.kind == Tool::Kind::Checkpoint) ::kill(other.pid, SIGTERM);
      c.error = fmt::format("node {} ({}): {}", o_.node, host_, t.error().message);
      c.aborted = true;
      c.abort_reason = c.error;
      break;
    }
    t->tag = job.rank;
    tools_.push_back(std::move(*t));
    c.paths.push_back(job.path);
    ++c.pending;
  }
  crkit::log::info("node {} ({}): checkpoint {} of {} into {}", o_.node, host_, seq,
                   per_rank_ ? "each rank" : fmt::format("process group {}", pgid_),
                   parent.string());
  ckpt_ = std::move(c);
  if (ckpt_->pending == 0) finish_checkpoint();
}

// Every cr_checkpoint of the request has ended: report the images, or the first failure.
void Agent::finish_checkpoint() {
  Ckpt c = std::move(*ckpt_);
  ckpt_.reset();
  const std::string err = c.aborted ? c.abort_reason : c.error;
  if (!err.empty()) {
    for (const auto& p : c.paths) ::unlink(p.c_str());
    send({{"op", "checkpoint_done"}, {"seq", c.seq}, {"ok", false}, {"error", err}});
    return;
  }
  send({{"op", "checkpoint_done"},
        {"seq", c.seq},
        {"ok", true},
        {"images", c.images},
        {"quiesce_ms", c.quiesce_ms},
        {"dump_ms", c.dump_ms}});
}

void Agent::on_tool_exit(Tool& t, int st) {
  if (t.out) drain(t.out, t.out_text);
  if (t.err) drain(t.err, t.err_text);
  const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  if (t.kind == Tool::Kind::Restart) {
    if (!ok && !image_pidns_[static_cast<size_t>(t.tag)] && pid_namespace_ == "auto" &&
        WIFEXITED(st) && (WEXITSTATUS(st) == EEXIST || WEXITSTATUS(st) == EBUSY)) {
      // The original PIDs are taken here (the job still runs, or another copy): restart in
      // a new PID namespace. The refused attempt touched nothing.
      crkit::log::info("node {} ({}): {}; restarting in a new PID namespace", o_.node, host_,
                       last_line(t.err_text));
      if (Status s = start_restart(static_cast<size_t>(t.tag), true); !s) {
        send({{"op", "failed"}, {"error", s.error().message}, {"code", s.error().code}});
        done_ = true;
      }
      return;
    }
    if (!ok) {
      std::string why = fmt::format("node {} ({}): cr_restart failed ({}): {}", o_.node, host_,
                                    status_text(st), last_line(t.err_text));
      crkit::log::error("{}", why);
      send({{"op", "failed"}, {"error", why}, {"code", WIFEXITED(st) ? WEXITSTATUS(st) : EIO}});
      // Nothing half-restored stays: the other images' ranks and restarts go too.
      for (auto& other : tools_)
        if (other.kind == Tool::Kind::Restart) ::kill(other.pid, SIGTERM);
      kill_ranks(SIGKILL);
      done_ = true;
      return;
    }
    if (!t.err_text.empty())  // what cr_restart (or a restored rank before its stdio is back) said
      std::fprintf(stderr, "%s", t.err_text.c_str());
    Json j = Json::parse(t.out_text, nullptr, false);
    const Json& img = start_["images"].at(static_cast<size_t>(t.tag));
    // A per-rank image holds one rank: its restored process is that rank.
    const int rank = img.at("ranks").size() == 1 ? img.at("ranks")[0].get<int>() : -1;
    const bool in_ns = image_pidns_[static_cast<size_t>(t.tag)];
    if (j.is_object()) {
      // In a new PID namespace the ranks are the namespace init's children, not ours: the
      // init stands for them (it ends, with their status, when they all have).
      if (in_ns && j.value("init", 0) > 0)
        known_[j["init"].get<pid_t>()] = rank;
      else if (j.contains("restored"))
        known_[j["restored"].get<pid_t>()] = rank;
      if (!in_ns && j.contains("pids"))
        for (auto& p : j["pids"]) known_.emplace(p.get<pid_t>(), rank);
      if (!in_ns && j.contains("pid") && !per_rank_) pgid_ = ::getpgid(j["pid"].get<pid_t>());
    }
    for (const auto& other : tools_)
      if (other.kind == Tool::Kind::Restart) return;  // more images to come
    running_ = true;
    Json pids = Json::array();
    for (auto& [p, r] : known_) pids.push_back(p);
    send({{"op", "started"}, {"pids", pids}, {"pid_namespace", pidns_}});
    crkit::log::info("node {} ({}): restarted ranks {}", o_.node, host_, Json(ranks_).dump());
    return;
  }
  // One cr_checkpoint of the request.
  if (!ckpt_) return;
  Ckpt& c = *ckpt_;
  --c.pending;
  if (!ok) {
    if (c.error.empty())
      c.error = fmt::format("node {} ({}): cr_checkpoint{} failed ({}): {}", o_.node, host_,
                            t.tag >= 0 ? fmt::format(" of rank {}", t.tag) : "", status_text(st),
                            last_line(t.err_text));
    for (auto& other : tools_)  // the others would only wait for a drain that cannot finish
      if (other.kind == Tool::Kind::Checkpoint) ::kill(other.pid, SIGTERM);
  } else {
    Json j = Json::parse(t.out_text, nullptr, false);
    const std::string image = j.is_object() ? j.value("file", std::string()) : std::string();
    auto hash = crkit::coord::xxh64_file(image);
    struct stat sb {};
    if (!hash || ::stat(image.c_str(), &sb) < 0) {
      if (c.error.empty())
        c.error = fmt::format("node {} ({}): reading the image '{}': {}", o_.node, host_, image,
                              hash ? std::strerror(errno) : hash.error().message);
    } else {
      const double quiesce = j.value("quiesce_seconds", 0.0) * 1000;
      const double total = j.value("total_seconds", 0.0) * 1000;
      c.quiesce_ms = std::max(c.quiesce_ms, quiesce);
      c.dump_ms = std::max(c.dump_ms, total - quiesce);
      c.images.push_back({{"image", image},
                          {"ranks", t.tag >= 0 ? std::vector<int>{t.tag} : ranks_},
                          {"size", static_cast<uint64_t>(sb.st_size)},
                          {"xxh64", *hash}});
    }
  }
  if (c.pending == 0) finish_checkpoint();
}

void Agent::on_child_exit(pid_t pid, int st) {
  for (size_t i = 0; i < tools_.size(); ++i)
    if (tools_[i].pid == pid) {
      Tool t = std::move(tools_[i]);
      tools_.erase(tools_.begin() + static_cast<long>(i));
      on_tool_exit(t, st);
      return;
    }
  auto it = known_.find(pid);
  if (it == known_.end()) return;  // a descendant that came to us (we are a subreaper)
  int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  if (terminating_ && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) code = 0;
  if (code != 0 && exit_status_ == 0) {
    exit_status_ = code;
    exit_message_ = it->second >= 0 ? fmt::format("rank {} on node {} ({}) ended with {}",
                                                  it->second, o_.node, host_, status_text(st))
                                    : fmt::format("a restarted rank on node {} ({}) ended with {}",
                                                  o_.node, host_, status_text(st));
    crkit::log::error("{}", exit_message_);
  }
  // The coordinator abandons a snapshot in progress at once (the others' channel drain would
  // wait for this rank forever) and ends the job, as mpiexec would.
  if (code != 0 && !terminating_)
    send({{"op", "rank_exited"},
          {"rank", it->second},
          {"status", code},
          {"message", status_text(st)}});
  known_.erase(it);
}

void Agent::check_done() {
  // A checkpoint in progress reports first (with --term its ranks are gone already).
  if (done_ || !running_ || ckpt_) return;
  for (const auto& t : tools_)
    if (t.kind == Tool::Kind::Restart) return;
  if (!known_.empty()) return;
  // Every rank we know of ended; restarted ones may have left descendants with us.
  int st;
  pid_t p;
  while ((p = ::waitpid(-1, &st, WNOHANG)) > 0) on_child_exit(p, st);
  if (p == 0) return;  // children remain (not ranks): wait for them too
  done_ = true;
  reported_ =
      coord_.send({{"op", "exited"}, {"status", exit_status_}, {"message", exit_message_}}).ok();
}

void Agent::accept_stdio() {
  for (;;) {
    UniqueFd fd(::accept4(stdio_listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) return;
    // Output of the restarted ranks only: another local user must not write into the job's.
    if (Status ok = crkit::check_loopback_peer(fd.get(), "the stdio port"); !ok) {
      crkit::log::warn("node {} ({}): {}", o_.node, host_, ok.error().message);
      continue;
    }
    stdio_.push_back(StdioConn{std::move(fd), {}, -1, -1});
  }
}

void Agent::service_stdio(size_t i) {
  StdioConn& c = stdio_[i];
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      c.fd.reset();
      return;
    }
    size_t off = 0;
    if (c.type < 0) {
      size_t take = std::min<size_t>(12 - c.ident.size(), static_cast<size_t>(n));
      c.ident.append(buf, take);
      off = take;
      if (c.ident.size() == 12) {
        int v[3];
        std::memcpy(v, c.ident.data(), sizeof v);
        c.rank = v[0];
        c.type = v[1];
        // stdin: the job has none (as at launch); EOF at once.
        if (c.type == 0) ::shutdown(c.fd.get(), SHUT_WR);
      }
    }
    if (c.type == 1 || c.type == 2) {
      const int out = c.type;
      for (size_t k = off; k < static_cast<size_t>(n);) {
        ssize_t w = ::write(out, buf + k, static_cast<size_t>(n) - k);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        k += static_cast<size_t>(w);
      }
    }
  }
}

void Agent::on_coord_message(const Json& m) {
  const std::string op = m.value("op", std::string());
  if (op == "start") {
    if (Status s = handle_start(m); !s) {
      crkit::log::error("node {} ({}): {}", o_.node, host_, s.error().message);
      send({{"op", "failed"}, {"error", s.error().message}, {"code", s.error().code}});
      kill_ranks(SIGKILL);
      done_ = true;
    }
  } else if (op == "fence_done") {
    crkit::pmi::KvsMap kvs;
    for (auto& [k, v] : m.at("kvs").items()) kvs[k] = v.get<std::string>();
    fence_->complete(std::move(kvs));
  } else if (op == "fence_failed") {
    fence_->complete(crkit::fail(EIO, m.value("error", std::string("fence failed"))));
  } else if (op == "prepare") {
    on_prepare(m);
  } else if (op == "checkpoint") {
    on_checkpoint(m);
  } else if (op == "checkpoint_abort") {
    if (ckpt_ && ckpt_->seq == m.at("seq").get<uint64_t>()) {
      ckpt_->aborted = true;
      ckpt_->abort_reason = m.value("reason", std::string("abandoned by the coordinator"));
      for (auto& t : tools_)
        if (t.kind == Tool::Kind::Checkpoint) ::kill(t.pid, SIGTERM);
    }
  } else if (op == "terminate") {
    // A --term snapshot is committed: end the ranks now (not before: had another node failed,
    // the job would have had to run on).
    crkit::log::info("node {} ({}): snapshot committed; terminating the ranks", o_.node, host_);
    terminating_ = true;
    kill_ranks(SIGKILL);
  } else if (op == "kill") {
    crkit::log::info("node {} ({}): killing the ranks: {}", o_.node, host_,
                     m.value("reason", std::string()));
    if (exit_status_ == 0) {
      exit_status_ = 128 + SIGKILL;
      exit_message_ = m.value("reason", std::string("killed by the coordinator"));
    }
    terminating_ = false;
    kill_ranks(SIGKILL);
  } else if (op.empty() && m.contains("ok") && !m.value("ok", true)) {
    // A refusal of agent_hello (a wrong token): nothing was started; say why and end.
    crkit::log::error("node {} ({}): the coordinator refused us: {}", o_.node, host_,
                      m.value("error", std::string("no reason given")));
    exit_status_ = exit_status_ ? exit_status_ : 1;
    kill_ranks(SIGKILL);
    done_ = true;
  } else {
    crkit::log::warn("node {}: unknown message '{}' from the coordinator", o_.node, op);
  }
}

int Agent::run() {
  char hn[256] = {};
  ::gethostname(hn, sizeof hn - 1);
  host_ = hn;
  crkit::log::set_program(fmt::format("cr_agent[{}]", o_.node));
  if (Status s = setup_signals(); !s) {
    crkit::log::error("{}", s.error().message);
    return 1;
  }
  auto fd = crkit::coord::connect_tcp(o_.coord, 20000);
  if (!fd) {
    crkit::log::error("node {} ({}): {}", o_.node, host_, fd.error().message);
    return 1;
  }
  coord_ = Channel(std::move(*fd), "the coordinator at " + o_.coord.str());
  send({{"op", "agent_hello"},
        {"job", o_.job},
        {"node", o_.node},
        {"host", host_},
        {"pid", ::getpid()},
        {"token", o_.token}});

  while (!done_ || !tools_.empty()) {
    std::vector<struct pollfd> pfds;
    pfds.push_back({coord_.fd(), POLLIN, 0});
    pfds.push_back({sigfd_.get(), POLLIN, 0});
    pfds.push_back({wake_.get(), POLLIN, 0});
    const size_t fixed = 3;
    const bool listening = stdio_listen_.valid();
    if (listening) pfds.push_back({stdio_listen_.get(), POLLIN, 0});
    const size_t stdio_base = pfds.size();
    for (auto& c : stdio_) pfds.push_back({c.fd.get(), POLLIN, 0});
    const size_t tool_base = pfds.size();
    for (auto& t : tools_) {
      pfds.push_back({t.out.valid() ? t.out.get() : -1, POLLIN, 0});
      pfds.push_back({t.err.valid() ? t.err.get() : -1, POLLIN, 0});
    }
    int r = ::poll(pfds.data(), pfds.size(), 1000);
    if (r < 0 && errno != EINTR) {
      crkit::log::error("poll: {}", std::strerror(errno));
      break;
    }
    // Tool output first: a tool's exit is handled with all it printed.
    for (size_t i = 0; i < tools_.size(); ++i) {
      if (pfds[tool_base + 2 * i].revents && tools_[i].out)
        drain(tools_[i].out, tools_[i].out_text);
      if (pfds[tool_base + 2 * i + 1].revents && tools_[i].err)
        drain(tools_[i].err, tools_[i].err_text);
    }
    if (pfds[1].revents) {
      struct signalfd_siginfo si;
      while (::read(sigfd_.get(), &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGCHLD) continue;
        crkit::log::info("node {} ({}): {}: killing the ranks", o_.node, host_,
                         strsignal(static_cast<int>(si.ssi_signo)));
        kill_ranks(SIGKILL);
        for (auto& t : tools_) ::kill(t.pid, SIGTERM);
        if (exit_status_ == 0) exit_status_ = 128 + static_cast<int>(si.ssi_signo);
      }
      int st;
      pid_t p;
      while ((p = ::waitpid(-1, &st, WNOHANG)) > 0) on_child_exit(p, st);
    }
    if (pfds[2].revents) {
      uint64_t n;
      (void)!::read(wake_.get(), &n, sizeof n);
      for (auto& puts : fence_->take_queued()) {
        Json j = Json::object();
        for (auto& [k, v] : puts) j[k] = v;
        send({{"op", "fence"}, {"puts", j}});
      }
    }
    if (listening && pfds[fixed].revents) accept_stdio();
    for (size_t i = 0; i < stdio_.size(); ++i)
      if (pfds[stdio_base + i].revents) service_stdio(i);
    std::erase_if(stdio_, [](const StdioConn& c) { return !c.fd.valid(); });
    if (pfds[0].revents) {
      coord_.fill();
      for (;;) {
        auto m = coord_.next();
        if (!m) {
          crkit::log::error("node {}: {}", o_.node, m.error().message);
          break;
        }
        if (!*m) break;
        try {
          on_coord_message(**m);
        } catch (const std::exception& e) {
          crkit::log::error("node {}: bad message from the coordinator: {}: {}", o_.node, e.what(),
                            crkit::coord::loggable(**m));
          if ((**m).value("op", std::string()) == "start") {
            send({{"op", "failed"},
                  {"error",
                   fmt::format("node {} ({}): bad start message: {}", o_.node, host_, e.what())},
                  {"code", EPROTO}});
            done_ = true;
          }
        }
      }
      if (!coord_.open()) {
        if (!done_)
          crkit::log::error("node {} ({}): lost the coordinator; killing the ranks", o_.node,
                            host_);
        kill_ranks(SIGKILL);
        if (fence_) fence_->fail_all("lost the coordinator");
        for (auto& t : tools_) ::kill(t.pid, SIGTERM);
        if (!done_) {
          done_ = true;
          exit_status_ = exit_status_ ? exit_status_ : 1;
        }
        // Reap what is left, then go.
        int st;
        while (!tools_.empty() || !known_.empty()) {
          pid_t p = ::waitpid(-1, &st, 0);
          if (p < 0) break;
          on_child_exit(p, st);
        }
        break;
      }
    }
    check_done();
  }
  // Relay what the restarted ranks still had to say.
  for (size_t i = 0; i < stdio_.size(); ++i) service_stdio(i);
  if (pmi_) pmi_->stop();
  for (int r : ranks_) ::unlink(fmt::format("/tmp/hydra-env-file-{}:{}", ::getpid(), r).c_str());
  // The job's status went to the coordinator; ours says whether this agent did its part.
  return reported_ ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  crkit::log::set_program("cr_agent");
  Options o = parse(argc, argv);
  Agent a(std::move(o));
  return a.run();
}
