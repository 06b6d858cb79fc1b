#include "tools/job_launch.hpp"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "common/unique_fd.hpp"
#include "protocol/token.hpp"
#include "snapshot/manifest.hpp"
#include "tools/job_registry.hpp"

namespace crkit::mpi_tools {

namespace {

using Clock = std::chrono::steady_clock;
using coord::Json;

// How long to wait: for a private cr_coordd to report its port; for the coordinator to answer
// submit and kill; for a killed job to end; for launchers to exit after the job ended.
constexpr int kCoorddStartMs = 10000;
constexpr int kCallMs = 30000;
constexpr int kKillCallMs = 5000;
constexpr auto kKillGrace = std::chrono::seconds(10);
constexpr auto kLauncherGrace = std::chrono::seconds(10);
// A launcher that fails may just be the news of the job's end arriving first (the agent
// reported to the coordinator, then exited): give the coordinator's answer this long.
constexpr auto kLauncherFailureGrace = std::chrono::seconds(2);

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status),
                       ::strsignal(WTERMSIG(status)));
  return fmt::format("ended with wait status {:#x}", status);
}

std::string join(const std::vector<std::string>& words) {
  std::string s;
  for (const auto& w : words) {
    if (!s.empty()) s += ' ';
    s += w;
  }
  return s;
}

// Starts argv (argv[0] found on PATH) in a process group of its own, so that a Ctrl-C on the
// terminal reaches this tool only and it can end the job in order (kill through the
// coordinator) instead of every piece dying at once. Stdin is /dev/null: nothing in the
// background group may read the terminal (it would stop on SIGTTIN), and ranks get no stdin
// (not forwarded), unless stdin_text is given: then stdin is a pipe that holds just that
// (how a token reaches a coordinator or an agent without showing on a command line).
// Stdout goes to stdout_fd when >= 0. An exec failure is this call's error.
Result<pid_t> spawn(const std::vector<std::string>& argv, int stdout_fd, const sigset_t& mask,
                    const std::string& stdin_text = {}) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return fail_errno("creating a pipe");
  UniqueFd rd(report[0]), wr(report[1]);
  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null) return fail_errno("opening /dev/null");
  UniqueFd in_rd, in_wr;
  if (!stdin_text.empty()) {
    int in[2];
    if (::pipe2(in, O_CLOEXEC) != 0) return fail_errno("creating a pipe");
    in_rd.reset(in[0]);
    in_wr.reset(in[1]);
    // A pipe holds 64 KiB: the text is in it before the child even runs.
    if (::write(in_wr.get(), stdin_text.data(), stdin_text.size()) !=
        static_cast<ssize_t>(stdin_text.size()))
      return fail_errno("writing to a pipe");
    in_wr.reset();
    null = std::move(in_rd);
  }
  pid_t pid = ::fork();
  if (pid < 0) return fail_errno(fmt::format("fork for {}", argv[0]));
  if (pid == 0) {
    ::setpgid(0, 0);
    ::dup2(null.get(), 0);
    if (stdout_fd >= 0) ::dup2(stdout_fd, 1);
    ::sigprocmask(SIG_SETMASK, &mask, nullptr);
    ::execvp(args[0], args.data());
    int err = errno;
    (void)!::write(wr.get(), &err, sizeof err);
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here: the caller may signal the group before the child runs
  wr.reset();
  int err = 0;
  ssize_t n;
  do {
    n = ::read(rd.get(), &err, sizeof err);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof err)) {
    int st;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return fail_sys(err, fmt::format("cannot run {}", argv[0]));
  }
  return pid;
}

class JobRun {
 public:
  JobRun(const JobOptions& o, const Programs& p, const std::string& tool)
      : o_(o), programs_(p), tool_(tool) {}

  int run(const JobSpec& spec) {
    if (Status st = block_signals(); !st) return failed(st.error());
    own_host_ = own_hostname();
    if (Status st = check_registry(spec.job); !st) return failed(st.error());
    if (Status st = find_coordinator(); !st) {
      stop_private_coordinator();
      return interrupt_sig_ ? 128 + interrupt_sig_ : failed(st.error());
    }
    if (Status st = submit(spec); !st) {
      stop_private_coordinator();
      return failed(st.error());
    }
    register_job(spec);
    if (Status st = open_wait(); !st) {
      // The job is known to the coordinator; it must not wait for agents that never come.
      request_kill(fmt::format("{} could not follow the job", tool_));
      unregister_job();
      return failed(st.error());
    }
    handle_signals();  // a Ctrl-C that came during the submission: no agent is started
    if (!interrupt_sig_) launch_agents(spec.nodes);
    return follow();
  }

 private:
  struct Launcher {
    int node = 0;
    std::string host;
    pid_t pid = 0;
    bool running = true;
    int status = 0;
    std::optional<Clock::time_point> failed_at;  // ended unsuccessfully, not yet reported
  };

  int failed(const Error& e) {
    log::error("{}", e.message);
    int code = exit_code_of(e.code);
    return code ? code : 1;
  }

  // The signals the main loop handles arrive through a signalfd; children get the old mask.
  Status block_signals() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGCHLD, SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, s);
    if (::sigprocmask(SIG_BLOCK, &set, &old_mask_) != 0) return fail_errno("sigprocmask");
    sigfd_.reset(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!sigfd_) return fail_errno("signalfd");
    return {};
  }

  // A job of the same name that still runs here would have its registry record overwritten.
  Status check_registry(const std::string& job) {
    auto r = read_job_record(run_dir_, job);
    if (r && r->pid != ::getpid() && record_owner_alive(*r))
      return fail(EEXIST, fmt::format("job '{}' is already running here ({} pid {}, coordinator "
                                      "{}); choose another name with --job",
                                      job, tool_, r->pid, r->coord));
    return {};
  }

  // Every connection's first message carries the coordinator's token.
  Json authed(Json m) const {
    m["token"] = token_;
    return m;
  }

  Status find_coordinator() {
    if (o_.coord) {
      // (What we start gets it on stdin, or not at all.)
      CRKIT_ASSIGN(token_, coord::client_token(o_.token_file, o_.coord->str()));
      self_ep_ = *o_.coord;
      agent_ep_ = o_.coord_host.empty() ? o_.coord->str()
                                        : coord::Endpoint{o_.coord_host, o_.coord->port}.str();
      log::info("coordinator {}", self_ep_.str());
      return {};
    }
    return start_private_coordinator();
  }

  // cr_coordd --listen '*:0' --private prints "cr_coordd: listening on PORT" once.
  Status start_private_coordinator() {
    if (::access(programs_.coordd.c_str(), X_OK) != 0)
      return fail_errno(fmt::format("cannot start a coordinator: {}", programs_.coordd));
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return fail_errno("creating a pipe");
    UniqueFd rd(out[0]), wr(out[1]);
    CRKIT_ASSIGN(token_, coord::new_token());
    CRKIT_ASSIGN(coordd_pid_,
                 spawn({programs_.coordd, "--listen", "*:0", "--private", "--token-stdin"},
                       wr.get(), old_mask_, token_ + "\n"));
    wr.reset();
    std::string line;
    const auto deadline = Clock::now() + std::chrono::milliseconds(kCoorddStartMs);
    for (;;) {
      if (auto nl = line.find('\n'); nl != std::string::npos) {
        line.resize(nl);
        break;
      }
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0)
        return fail(ETIMEDOUT, fmt::format("{} did not report its port within {} s",
                                           programs_.coordd, kCoorddStartMs / 1000));
      struct pollfd p[2] = {{rd.get(), POLLIN, 0}, {sigfd_.get(), POLLIN, 0}};
      if (::poll(p, 2, static_cast<int>(left)) < 0 && errno != EINTR) return fail_errno("poll");
      if (p[1].revents) {
        handle_signals();
        if (interrupt_sig_)
          return fail(EINTR, fmt::format("interrupted by SIG{}", ::sigabbrev_np(interrupt_sig_)));
      }
      if (p[0].revents) {
        char buf[256];
        ssize_t n = ::read(rd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          // It closed its stdout without a port: it failed, and said why on our stderr.
          int st = coordd_status_;
          if (coordd_pid_ > 0) {
            while (::waitpid(coordd_pid_, &st, 0) < 0 && errno == EINTR) {
            }
            coordd_pid_ = 0;
          }
          std::string how = describe_status(st);
          return fail(ECONNREFUSED,
                      fmt::format("{} {} before it reported its port", programs_.coordd, how));
        }
        line.append(buf, static_cast<size_t>(n));
      }
    }
    // The read end stays closed from here: the coordinator prints nothing more.
    rd.reset();
    static constexpr std::string_view kPrefix = "cr_coordd: listening on ";
    unsigned long port = 0;
    if (line.starts_with(kPrefix)) {
      const std::string digits = line.substr(kPrefix.size());
      char* end = nullptr;
      port = std::strtoul(digits.c_str(), &end, 10);
      if (digits.empty() || *end || port == 0 || port > 65535) port = 0;
    }
    if (port == 0)
      return fail(EPROTO, fmt::format("{} printed '{}', not 'cr_coordd: listening on PORT'",
                                      programs_.coordd, line));
    // The coordinator listens on every address; this tool reaches it over loopback, which
    // works even where the host name does not resolve to this host.
    self_ep_ = coord::Endpoint{"127.0.0.1", static_cast<uint16_t>(port)};
    const std::string host = o_.coord_host.empty() ? own_host_ : o_.coord_host;
    if (host.empty()) return fail_errno("gethostname (give --coord-host)");
    agent_ep_ = coord::Endpoint{host, static_cast<uint16_t>(port)}.str();
    log::info("coordinator {} (private, pid {})", agent_ep_, coordd_pid_);
    return {};
  }

  // A private coordinator with no job of ours would wait for one forever.
  void stop_private_coordinator() {
    if (coordd_pid_ <= 0) return;
    // Before it reported its port it cannot be asked; afterwards it may clean up first.
    if (self_ep_.port) (void)coord::call(self_ep_, authed({{"op", "shutdown"}}), 2000);
    const auto deadline = Clock::now() + std::chrono::seconds(self_ep_.port ? 2 : 0);
    int st;
    while (::waitpid(coordd_pid_, &st, WNOHANG) == 0) {
      if (Clock::now() >= deadline) {
        ::kill(coordd_pid_, SIGTERM);
        while (::waitpid(coordd_pid_, &st, 0) < 0 && errno == EINTR) {
        }
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    coordd_pid_ = 0;
  }

  Status submit(const JobSpec& spec) {
    const Json req = authed({{"op", "submit"}, {"spec", spec_json(spec)}});
    auto reply = coord::call(self_ep_, req, kCallMs);
    if (!reply) return fail(reply.error().context(fmt::format("submitting job '{}'", spec.job)));
    if (!reply->value("ok", false))
      return fail(reply->value("code", EIO),
                  fmt::format("the coordinator at {} refused job '{}': {}", self_ep_.str(),
                              spec.job, reply->value("error", std::string("no reason given"))));
    job_ = reply->value("job", spec.job);
    // A shared coordinator knows best where agents reach it, unless --coord-host says.
    if (o_.coord && o_.coord_host.empty()) {
      auto ep = reply->find("agent_endpoint");
      if (ep != reply->end() && ep->is_string() && !ep->get<std::string>().empty())
        agent_ep_ = ep->get<std::string>();
    }
    log::info("job {}", job_);
    return {};
  }

  void register_job(const JobSpec& spec) {
    JobRecord r{job_, agent_ep_, ::getpid(), spec.checkpoint_dir, coord::iso8601_utc_now(), token_};
    if (Status st = write_job_record(run_dir_, r); !st) {
      log::warn("{} (cr_snapshot will need --coord {})", st.error().message, agent_ep_);
      return;
    }
    registered_ = true;
  }

  void unregister_job() {
    if (!registered_) return;
    registered_ = false;
    if (Status st = remove_job_record(run_dir_, job_, ::getpid()); !st)
      log::warn("{}", st.error().message);
  }

  // Before any agent starts: the answer must not be missed, however fast the job is.
  Status open_wait() {
    CRKIT_ASSIGN(UniqueFd fd, coord::connect_tcp(self_ep_, 5000));
    wait_ch_ = coord::Channel(std::move(fd), "the coordinator at " + self_ep_.str());
    return wait_ch_.send(authed({{"op", "wait"}, {"job", job_}}));
  }

  void launch_agents(const std::vector<coord::NodePlan>& nodes) {
    for (size_t k = 0; k < nodes.size(); ++k) {
      const std::string& host = nodes[k].host;
      const bool local = o_.launcher.empty() || is_local_host(host, own_host_);
      auto cmd = agent_command(o_.launcher, host, local, programs_.agent, agent_ep_, job_,
                               static_cast<int>(k));
      auto pid = spawn(cmd, -1, old_mask_, token_ + "\n");
      if (!pid) {
        launcher_failed_ = true;
        launcher_status_ = 127;  // as a shell reports a command it cannot run
        log::error("node {} ({}): {}", k, host, pid.error().message);
        request_kill(fmt::format("node {} ({}): {}", k, host, pid.error().message));
        return;  // the job is being killed: the other nodes need no agent
      }
      launchers_.push_back(Launcher{static_cast<int>(k), host, *pid});
      if (local)
        log::info("node {} ({}): cr_agent started, pid {}", k, host, *pid);
      else
        log::info("node {} ({}): cr_agent started through '{}', pid {}", k, host, join(o_.launcher),
                  *pid);
    }
  }

  // Asks the coordinator to end the job, which then has kKillGrace to do so.
  void request_kill(const std::string& reason) {
    if (kill_sent_) return;
    kill_sent_ = true;
    kill_reason_ = reason;
    kill_deadline_ = Clock::now() + kKillGrace;
    auto reply = coord::call(self_ep_, authed({{"op", "kill"}, {"job", job_}, {"reason", reason}}),
                             kKillCallMs);
    if (!reply)
      log::warn("asking the coordinator to kill job {}: {}", job_, reply.error().message);
    else if (!reply->value("ok", false))
      log::warn("the coordinator did not kill job {}: {}", job_,
                reply->value("error", std::string("no reason given")));
  }

  void reap() {
    int st;
    pid_t pid;
    while ((pid = ::waitpid(-1, &st, WNOHANG)) > 0) {
      if (pid == coordd_pid_) {
        coordd_pid_ = 0;
        coordd_status_ = st;
        // Its answer to wait may still be unread; a lost connection is reported there.
        log::debug("the coordinator {}", describe_status(st));
        continue;
      }
      for (auto& l : launchers_) {
        if (l.pid != pid || !l.running) continue;
        l.running = false;
        l.status = st;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) break;
        if (ended_ || kill_sent_)
          log::info("node {} ({}): launcher {}", l.node, l.host, describe_status(st));
        else
          l.failed_at = Clock::now();
        break;
      }
    }
  }

  void handle_signals() {
    struct signalfd_siginfo si;
    while (::read(sigfd_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
      const int sig = static_cast<int>(si.ssi_signo);
      if (sig == SIGCHLD) {
        reap();
        continue;
      }
      if (interrupt_sig_) {
        // timeout(1) and some batch systems signal the process and then its group: one
        // request, delivered twice. A second Ctrl-C comes later than that.
        if (Clock::now() - interrupted_at_ < std::chrono::seconds(1)) continue;
        log::error("got SIG{} again: stopping now", ::sigabbrev_np(sig));
        give_up_ = true;
        continue;
      }
      interrupt_sig_ = sig;
      interrupted_at_ = Clock::now();
      if (job_.empty()) continue;  // not submitted yet: nothing to kill
      if (!ended_) {
        log::error("got SIG{}: killing job {}", ::sigabbrev_np(sig), job_);
        kill_sent_ = false;  // this kill gets its own grace, even after an earlier one
        request_kill(fmt::format("{} got SIG{}", tool_, ::sigabbrev_np(sig)));
      }
    }
  }

  // Launchers that failed while the job ran, once the grace has passed: reported, and the job
  // killed (the coordinator may not see a node that never started).
  void report_launcher_failures() {
    for (auto& l : launchers_) {
      if (!l.failed_at || Clock::now() < *l.failed_at + kLauncherFailureGrace) continue;
      l.failed_at.reset();
      if (ended_) continue;
      if (kill_sent_) {
        log::info("node {} ({}): launcher {}", l.node, l.host, describe_status(l.status));
        continue;
      }
      const std::string what =
          WIFEXITED(l.status)
              ? fmt::format("node {} ({}): launcher exited with status {}", l.node, l.host,
                            WEXITSTATUS(l.status))
              : fmt::format("node {} ({}): launcher {}", l.node, l.host, describe_status(l.status));
      log::error("{}", what);
      launcher_failed_ = true;
      launcher_status_ = WIFEXITED(l.status) ? WEXITSTATUS(l.status) : 128 + WTERMSIG(l.status);
      request_kill(what);
    }
  }

  bool launchers_running() const {
    for (const auto& l : launchers_)
      if (l.running) return true;
    return false;
  }

  // SIGTERM to every launcher's process group (a local agent's includes its ranks), then
  // SIGKILL to what is left after a few seconds.
  void stop_launchers() {
    for (const auto& l : launchers_)
      if (l.running) ::kill(-l.pid, SIGTERM);
    const auto deadline = Clock::now() + std::chrono::seconds(3);
    while (launchers_running() && Clock::now() < deadline) {
      reap();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (auto& l : launchers_) {
      if (!l.running) continue;
      ::kill(-l.pid, SIGKILL);
      int st;
      while (::waitpid(l.pid, &st, 0) < 0 && errno == EINTR) {
      }
      l.running = false;
    }
  }

  void on_wait_reply(const Json& m) {
    ended_ = true;
    launcher_deadline_ = Clock::now() + kLauncherGrace;
    if (!m.value("ok", false)) {
      const int code = m.value("code", EIO);
      log::error("waiting for job {}: {}", job_, m.value("error", std::string("no reason given")));
      exit_code_ = exit_code_of(code) ? exit_code_of(code) : 1;
      return;
    }
    exit_code_ = m.value("exit_code", 0) & 0xff;
    // A job that lost a node did not succeed, whatever its surviving ranks returned.
    if (launcher_failed_ && exit_code_ == 0) exit_code_ = 1;
    const std::string message = m.value("message", std::string());
    // After our own kill request the message may be our own reason: no news then.
    if (exit_code_ != 0 && !message.empty() && message != kill_reason_)
      log::error("job {}: {}", job_, message);
    else if (!message.empty())
      log::info("job {}: {}", job_, message);
    else
      log::info("job {} ended with exit code {}", job_, exit_code_);
  }

  void on_wait_lost(const std::string& why) {
    log::error("lost the coordinator at {} before job {} ended: {}", self_ep_.str(), job_, why);
    ended_ = true;
    exit_code_ = exit_code_of(ECONNRESET);
    // Without a coordinator the agents end their ranks by themselves; this is their time.
    launcher_deadline_ = Clock::now() + kLauncherGrace;
  }

  void read_wait_channel() {
    wait_ch_.fill();
    for (;;) {
      auto m = wait_ch_.next();
      if (!m) return on_wait_lost(m.error().message);
      if (!*m) break;
      if ((*m)->contains("ok")) return on_wait_reply(**m);
      // Anything else is an event this tool does not follow.
    }
    if (!wait_ch_.open()) on_wait_lost("it closed the connection");
  }

  // A private coordinator ends with its last job, right after answering wait; reaped here, it
  // does not become a zombie of an init that does not reap (as in some containers).
  void reap_private_coordinator() {
    const auto deadline = Clock::now() + std::chrono::seconds(2);
    int st;
    while (coordd_pid_ > 0 && Clock::now() < deadline) {
      if (::waitpid(coordd_pid_, &st, WNOHANG) != 0) {
        coordd_pid_ = 0;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  int finish() {
    unregister_job();
    if (give_up_ || (interrupt_sig_ && !ended_)) {
      stop_launchers();
      // Ours, and no use without the job; a shared coordinator is not ours to stop.
      if (coordd_pid_ > 0) ::kill(coordd_pid_, SIGTERM);
    }
    reap_private_coordinator();
    if (interrupt_sig_) return 128 + interrupt_sig_;
    if (!ended_ && launcher_failed_) return launcher_status_ ? launcher_status_ : 1;
    return exit_code_;
  }

  int follow() {
    for (;;) {
      report_launcher_failures();
      if (give_up_) return finish();
      if (ended_ && !launchers_running()) return finish();
      const auto now = Clock::now();
      std::optional<Clock::time_point> wake;
      auto earliest = [&](std::optional<Clock::time_point> t) {
        if (t && (!wake || *t < *wake)) wake = t;
      };
      if (ended_) {
        if (now >= launcher_deadline_) {
          log::warn("node launchers still run {} s after job {} ended; stopping them",
                    kLauncherGrace.count(), job_);
          stop_launchers();
          continue;
        }
        earliest(launcher_deadline_);
      } else if (kill_deadline_) {
        if (now >= *kill_deadline_) {
          log::error("job {} did not end within {} s of the kill request; stopping it here", job_,
                     kKillGrace.count());
          give_up_ = true;
          continue;
        }
        earliest(kill_deadline_);
      }
      for (const auto& l : launchers_)
        if (l.failed_at) earliest(*l.failed_at + kLauncherFailureGrace);
      int timeout = -1;
      if (wake)
        timeout = static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(*wake - now).count() + 1);
      struct pollfd p[2] = {{sigfd_.get(), POLLIN, 0}, {wait_ch_.fd(), POLLIN, 0}};
      const nfds_t n = ended_ ? 1 : 2;
      if (::poll(p, n, timeout) < 0 && errno != EINTR) {
        log::error("poll: {}", std::strerror(errno));
        give_up_ = true;
        continue;
      }
      if (p[0].revents) handle_signals();
      if (n == 2 && p[1].revents) read_wait_channel();
    }
  }

  const JobOptions& o_;
  const Programs& programs_;
  const std::string tool_;
  const std::string run_dir_ = default_run_dir();
  std::string own_host_;
  sigset_t old_mask_{};
  UniqueFd sigfd_;
  pid_t coordd_pid_ = 0;
  std::string token_;        // the coordinator's (protocol/token.hpp)
  int coordd_status_ = 0;    // when reaped by reap()
  coord::Endpoint self_ep_;  // where this tool talks to the coordinator
  std::string agent_ep_;     // where the agents (and cr_snapshot, via the registry) do
  std::string job_;
  bool registered_ = false;
  coord::Channel wait_ch_;
  std::vector<Launcher> launchers_;
  bool kill_sent_ = false;
  std::string kill_reason_;
  bool launcher_failed_ = false;
  bool ended_ = false;
  int exit_code_ = 0;
  int interrupt_sig_ = 0;
  bool give_up_ = false;
  Clock::time_point interrupted_at_{};
  int launcher_status_ = 0;                         // of the first launcher that failed
  std::optional<Clock::time_point> kill_deadline_;  // for the job to end after a kill request
  Clock::time_point launcher_deadline_{};
};

}  // namespace

Result<Programs> find_programs() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) return fail_errno("readlink /proc/self/exe");
  std::string exe(buf, static_cast<size_t>(n));
  auto slash = exe.rfind('/');
  Programs p;
  p.bindir = slash == 0 ? "/" : exe.substr(0, slash);
  p.coordd = p.bindir + "/cr_coordd";
  p.agent = p.bindir + "/cr_agent";
  return p;
}

std::map<std::string, std::string> job_environment(const char* const* envp,
                                                   const std::vector<std::string>& exclude,
                                                   bool nolocal) {
  auto excluded = [&](std::string_view name) {
    // The coordinator's secret is no business of the ranks (and would end up in the images).
    if (name.starts_with("PMI_") || name == "CRKIT_COORD_TOKEN") return true;
    for (const auto& e : exclude) {
      if (!e.empty() && e.back() == '*') {
        if (name.starts_with(std::string_view(e).substr(0, e.size() - 1))) return true;
      } else if (name == e) {
        return true;
      }
    }
    return false;
  };
  std::map<std::string, std::string> env;
  for (auto p = envp; p && *p; ++p) {
    std::string_view kv(*p);
    auto eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    std::string name(kv.substr(0, eq));
    if (excluded(name)) continue;
    env.emplace(std::move(name), std::string(kv.substr(eq + 1)));  // the first one wins, as getenv
  }
  // MPICH's nemesis checkpoint code runs only when asked (mpich-checkpointing.md).
  env["MPIR_CVAR_NEMESIS_ENABLE_CKPOINT"] = "1";
  if (nolocal) env["MPIR_CVAR_NOLOCAL"] = "1";
  return env;
}

std::string own_hostname() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

bool is_local_host(const std::string& host, const std::string& own) {
  if (host == "localhost" || host == "127.0.0.1" || host == "::1") return true;
  if (own.empty()) return false;
  if (host == own) return true;
  auto first = [](const std::string& s) { return s.substr(0, s.find('.')); };
  return (host.find('.') == std::string::npos && host == first(own)) ||
         (own.find('.') == std::string::npos && first(host) == own);
}

std::string shell_quote(const std::string& word) {
  const bool plain = !word.empty() && word.find_first_not_of(
                                          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                          "0123456789_./:@%+=,-") == std::string::npos;
  if (plain) return word;
  std::string q = "'";
  for (char c : word) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  return q + "'";
}

std::vector<std::string> agent_command(const std::vector<std::string>& launcher,
                                       const std::string& host, bool local,
                                       const std::string& agent, const std::string& coord_ep,
                                       const std::string& job, int node) {
  std::vector<std::string> cmd = {
      agent, "--coord", coord_ep, "--job", job, "--node", std::to_string(node), "--token-stdin"};
  if (local || launcher.empty()) return cmd;
  std::vector<std::string> full = launcher;
  full.push_back(host);
  for (const auto& w : cmd) full.push_back(shell_quote(w));
  return full;
}

Result<std::vector<coord::HostSlot>> load_hosts(const JobOptions& o) {
  if (!o.hosts.empty()) return o.hosts;
  if (o.hostfile.empty()) return std::vector<coord::HostSlot>{};
  std::ifstream in(o.hostfile);
  if (!in) return fail_errno(fmt::format("reading hostfile {}", o.hostfile));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return fail_errno(fmt::format("reading hostfile {}", o.hostfile));
  return coord::parse_hostfile(text.str(), o.hostfile);
}

std::string describe_mpi(const std::map<std::string, std::string>& env, std::string* warning) {
  std::vector<std::string> dirs;
  if (auto it = env.find("LD_LIBRARY_PATH"); it != env.end()) {
    std::stringstream ss(it->second);
    for (std::string d; std::getline(ss, d, ':');)
      if (!d.empty()) dirs.push_back(d);
  }
  dirs.push_back("/usr/lib/x86_64-linux-gnu");
  for (const auto& d : dirs) {
    const std::string lib = d + "/libmpich.so.12";
    if (::access(lib.c_str(), R_OK) != 0) continue;
    const std::string tool = d + "/../bin/mpichversion";
    std::string version, device;
    if (::access(tool.c_str(), X_OK) == 0) {
      if (FILE* f = ::popen(shell_quote(tool).c_str(), "r")) {
        char line[512];
        while (std::fgets(line, sizeof line, f)) {
          std::string l(line);
          auto value = [&](const char* key) {
            std::string v = l.substr(std::strlen(key));
            v.erase(0, v.find_first_not_of(" \t"));
            while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
            return v;
          };
          if (l.rfind("MPICH Version:", 0) == 0) version = value("MPICH Version:");
          if (l.rfind("MPICH Device:", 0) == 0) device = value("MPICH Device:");
        }
        ::pclose(f);
      }
    }
    if (device.rfind("ch3:nemesis", 0) != 0 && warning)
      *warning = fmt::format(
          "the ranks will load {} ({}), which cannot checkpoint: put the lib directory of the "
          "checkpoint-enabled MPICH (mpi_glue/build-mpich.sh --print-prefix) first in "
          "LD_LIBRARY_PATH",
          lib, device.empty() ? "not a checkpoint-enabled build" : "device " + device);
    return version.empty() ? "MPICH (" + lib + ")" : fmt::format("MPICH {} {}", version, device);
  }
  return "unknown (no libmpich.so.12 found)";
}

Json spec_json(const JobSpec& s) {
  Json nodes = Json::array();
  for (const auto& n : s.nodes) nodes.push_back(Json{{"host", n.host}, {"ranks", n.ranks}});
  Json spec = {{"job", s.job},
               {"nranks", s.nranks},
               {"nodes", std::move(nodes)},
               {"argv", s.argv},
               {"env", s.env},
               {"cwd", s.cwd},
               {"checkpoint_dir", s.checkpoint_dir},
               {"keep", s.keep},
               {"interval", s.interval},
               {"nolocal", s.nolocal},
               {"restart", nullptr},
               {"pid_namespace", s.pid_namespace_always ? "always" : "auto"}};
  if (!s.restart_manifest.empty()) spec["restart"] = Json{{"manifest", s.restart_manifest}};
  if (!s.mpi.empty()) spec["mpi"] = s.mpi;
  return spec;
}

int run_job(const JobOptions& o, const Programs& programs, const JobSpec& spec,
            const std::string& tool) {
  JobRun run(o, programs, tool);
  return run.run(spec);
}

}  // namespace crkit::mpi_tools
