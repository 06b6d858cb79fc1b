#include "pmi/pmi_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "common/log.hpp"
#include "common/loopback_peer.hpp"
#include "common/unique_fd.hpp"
#include "pmi/wire.hpp"

namespace crkit::pmi {
namespace {

std::optional<int> parse_int(std::string_view s) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::string join_ranks(const std::set<int>& ranks) {
  std::string out;
  for (int r : ranks) {
    if (!out.empty()) out += ',';
    out += std::to_string(r);
  }
  return out;
}

// Carries fence outcomes from whichever thread the backend completes on to the poll loop,
// and wakes that loop (also for stop()). Shared with the Done callbacks, so a backend that
// completes after the server is gone posts into a closed box instead of freed memory.
class Mailbox {
 public:
  struct Outcome {
    uint64_t generation;
    Result<KvsMap> result;
  };

  static Result<std::shared_ptr<Mailbox>> create() {
    int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return fail_errno("PMI server: creating its wake-up eventfd");
    auto box = std::make_shared<Mailbox>();
    box->efd_.reset(fd);
    return box;
  }

  int fd() const { return efd_.get(); }

  void post(uint64_t generation, Result<KvsMap> result) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      queue_.push_back(Outcome{generation, std::move(result)});
    }
    wake();
  }

  void wake() {
    uint64_t one = 1;
    // Only EAGAIN (counter saturated, so already readable) can fail here.
    [[maybe_unused]] ssize_t n = ::write(efd_.get(), &one, sizeof one);
  }

  std::deque<Outcome> drain() {
    uint64_t count = 0;
    [[maybe_unused]] ssize_t n = ::read(efd_.get(), &count, sizeof count);
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(queue_, {});
  }

  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    queue_.clear();
  }

 private:
  std::mutex mu_;
  bool closed_ = false;
  std::deque<Outcome> queue_;
  UniqueFd efd_;
};

struct Conn {
  uint64_t id = 0;
  UniqueFd fd;
  std::string peer;  // "ip:port" of the client
  std::string in, out;
  int rank = -1;         // set by a successful initack
  bool closing = false;  // read nothing more; close once `out` is flushed
  bool dead = false;     // close now, for `dead_reason`
  std::string dead_reason;
  // A multi-line "mcmd=spawn" request being skipped up to its last "endcmd".
  bool in_mcmd = false;
  int mcmd_total = 1, mcmd_so_far = 0;
};

enum class SlotState { NotConnected, Live, Gone };
struct Slot {
  SlotState state = SlotState::NotConnected;
  uint64_t conn = 0;
  bool in_barrier = false;
};

// Marks the thread that runs a server loop, so stop() from an event callback does not join
// its own thread.
thread_local const void* tl_serving = nullptr;

}  // namespace

struct PmiServer::Impl {
  ServerConfig cfg;
  std::shared_ptr<FenceBackend> fence;
  ServerEvents events;
  UniqueFd listen_fd;
  uint16_t port = 0;
  std::string name;  // "PMI server 127.0.0.1:PORT", the prefix of every log line
  std::shared_ptr<Mailbox> mailbox;
  std::atomic<bool> stop_requested{false};
  std::mutex join_mu;
  std::thread thread;

  // Touched only by the server thread.
  std::map<uint64_t, Conn> conns;
  uint64_t next_conn_id = 1;
  std::map<int, Slot> slots;
  Kvs kvs;
  bool fence_in_flight = false;
  uint64_t fence_generation = 0;
  KeyValues fence_batch;
  bool accept_paused = false;

  mutable std::mutex connected_mu;
  std::set<int> connected;

  void run();
  void accept_all();
  void read_from(Conn& c);
  void handle_line(Conn& c, std::string_view line);
  void dispatch(Conn& c, const Command& cmd, std::string_view line);
  void flush(Conn& c);
  void reap();
  void shut_down();

  void on_init(Conn& c, const Command& cmd);
  void on_initack(Conn& c, const Command& cmd);
  void on_put(Conn& c, const Command& cmd);
  void on_get(Conn& c, const Command& cmd);
  void on_getbyidx(Conn& c, const Command& cmd);
  void on_barrier_in(Conn& c, const Command& cmd);
  void on_finalize(Conn& c);
  void on_abort(Conn& c, const Command& cmd, std::string_view line);
  void on_mcmd_line(Conn& c, std::string_view line);

  void maybe_start_fence();
  void finish_fence(uint64_t generation, Result<KvsMap> result);
  void rank_gone(int rank, RankExit::Kind kind, int exit_code, std::string message);

  std::string who(const Conn& c) const;
  void send(Conn& c, std::string line) { c.out += line; }
  void send_error(Conn& c, std::string_view reply_cmd, const std::string& message);
  bool require_rank(Conn& c, const Command& cmd, std::string_view reply_cmd);
  bool require_kvsname(Conn& c, const Command& cmd, std::string_view reply_cmd);
  void kill(Conn& c, std::string reason) {
    if (c.dead) return;
    c.dead = true;
    c.dead_reason = std::move(reason);
  }
};

std::string PmiServer::Impl::who(const Conn& c) const {
  if (c.rank >= 0) return fmt::format("rank {} (fd {}, {})", c.rank, c.fd.get(), c.peer);
  return fmt::format("connection fd {} ({}, before initack)", c.fd.get(), c.peer);
}

void PmiServer::Impl::send_error(Conn& c, std::string_view reply_cmd, const std::string& message) {
  log::warn("{}: {}: {}", name, who(c), message);
  send(c, format_command(reply_cmd, {{"rc", "-1"}, {"msg", wire_token(message)}}));
}

// Commands that name a rank's data need to know which rank is asking.
bool PmiServer::Impl::require_rank(Conn& c, const Command& cmd, std::string_view reply_cmd) {
  if (c.rank >= 0) return true;
  send_error(
      c, reply_cmd,
      fmt::format("{} before initack: a rank must first send initack pmiid=<PMI_ID>", cmd.name));
  return false;
}

bool PmiServer::Impl::require_kvsname(Conn& c, const Command& cmd, std::string_view reply_cmd) {
  const std::string* k = cmd.find("kvsname");
  if (!k) {
    send_error(c, reply_cmd, fmt::format("{} without kvsname=", cmd.name));
    return false;
  }
  if (*k != cfg.kvsname) {
    send_error(c, reply_cmd,
               fmt::format("{}: unknown kvsname {} (this job's is {})", cmd.name, *k, cfg.kvsname));
    return false;
  }
  return true;
}

void PmiServer::Impl::run() {
  tl_serving = this;
  std::vector<pollfd> pfds;
  std::vector<uint64_t> ids;
  while (!stop_requested.load(std::memory_order_acquire)) {
    pfds.clear();
    ids.clear();
    pfds.push_back(pollfd{mailbox->fd(), POLLIN, 0});
    // A negative fd is skipped by poll(): accepting pauses while out of descriptors.
    pfds.push_back(pollfd{accept_paused ? -1 : listen_fd.get(), POLLIN, 0});
    for (auto& [id, c] : conns) {
      short want = c.closing ? 0 : POLLIN;
      if (!c.out.empty()) want |= POLLOUT;
      pfds.push_back(pollfd{c.fd.get(), want, 0});
      ids.push_back(id);
    }
    int n = ::poll(pfds.data(), pfds.size(), accept_paused ? 500 : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log::error("{}: poll: {}; serving stops", name, std::strerror(errno));
      break;
    }
    if (n == 0) accept_paused = false;  // retry accepting after the pause

    if (pfds[0].revents != 0) {
      for (auto& o : mailbox->drain()) finish_fence(o.generation, std::move(o.result));
    }
    if (pfds[1].revents != 0) accept_all();
    for (size_t i = 0; i < ids.size(); ++i) {
      short got = pfds[i + 2].revents;
      if (got == 0) continue;
      auto it = conns.find(ids[i]);
      if (it == conns.end()) continue;
      Conn& c = it->second;
      if (got & POLLNVAL) {
        kill(c, "descriptor became invalid");
      } else if (!c.closing && (got & (POLLIN | POLLHUP | POLLERR))) {
        read_from(c);
      } else if (got & (POLLHUP | POLLERR)) {
        kill(c, "peer closed the connection before reading our last reply");
      }
    }
    for (auto& [id, c] : conns) {
      if (!c.dead && !c.out.empty()) flush(c);
    }
    reap();
  }
  shut_down();
}

void PmiServer::Impl::accept_all() {
  for (;;) {
    sockaddr_in addr{};
    socklen_t len = sizeof addr;
    int fd = ::accept4(listen_fd.get(), reinterpret_cast<sockaddr*>(&addr), &len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      log::error("{}: accepting a connection: {}", name, std::strerror(err));
      // Out of descriptors or memory: poll() would report the pending connection again at
      // once, so stop listening until a connection closes or a short pause passes.
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) accept_paused = true;
      return;
    }
    Conn c;
    c.id = next_conn_id++;
    c.fd.reset(fd);
    char ip[INET_ADDRSTRLEN] = "?";
    ::inet_ntop(AF_INET, &addr.sin_addr, ip, sizeof ip);
    c.peer = fmt::format("{}:{}", ip, ntohs(addr.sin_port));
    // Only the job's own ranks (our user) may join its key space, not any local user.
    if (Status ok = check_loopback_peer(fd, name.c_str()); !ok) {
      log::warn("{}", ok.error().message);
      continue;  // c closes the connection
    }
    // Every PMI exchange is a short request and a short reply: do not let Nagle delay them.
    int one = 1;
    if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
      log::debug("{}: TCP_NODELAY on fd {}: {}", name, fd, std::strerror(errno));
    }
    log::debug("{}: accepted fd {} from {}", name, fd, c.peer);
    conns.emplace(c.id, std::move(c));
  }
}

void PmiServer::Impl::read_from(Conn& c) {
  char buf[4096];
  bool eof = false;
  for (;;) {
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      eof = true;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    kill(c, fmt::format("receiving from {}: {}", c.peer, std::strerror(errno)));
    return;
  }

  size_t start = 0;
  while (!c.closing && !c.dead) {
    size_t nl = c.in.find('\n', start);
    if (nl == std::string::npos) break;
    handle_line(c, std::string_view(c.in).substr(start, nl - start));
    start = nl + 1;
  }
  c.in.erase(0, start);
  if (c.in.size() > kMaxLineBytes && !c.closing && !c.dead) {
    send_error(
        c, "error",
        fmt::format("request line longer than {} bytes without a newline; closing", kMaxLineBytes));
    c.closing = true;
  }
  if (eof && !c.closing) kill(c, "peer closed the connection");
}

void PmiServer::Impl::handle_line(Conn& c, std::string_view line) {
  log::debug("{}: {} sent: {}", name, who(c), line);
  if (c.in_mcmd) {
    on_mcmd_line(c, line);
    return;
  }
  if (line.empty()) return;
  // An abort's error_msg= (sent by some clients, not MPICH 4.0) is free text with blanks that
  // runs to the end of the line, so only the part before it is tokenized.
  std::string_view tokens = line;
  if (line.starts_with("cmd=abort ")) {
    if (size_t p = line.find(" error_msg="); p != std::string_view::npos) {
      tokens = line.substr(0, p);
    }
  }
  auto cmd = parse_command(tokens);
  if (!cmd) {
    send_error(c, "error", cmd.error().message);
    return;
  }
  dispatch(c, *cmd, line);
}

void PmiServer::Impl::dispatch(Conn& c, const Command& cmd, std::string_view line) {
  const std::string& n = cmd.name;
  if (cmd.multi_line) {
    c.in_mcmd = true;
    c.mcmd_total = 1;
    c.mcmd_so_far = 0;
    return;
  }
  if (n == "init") {
    on_init(c, cmd);
  } else if (n == "initack") {
    on_initack(c, cmd);
  } else if (n == "get_maxes") {
    send(c, format_command("maxes", {{"kvsname_max", std::to_string(kKvsnameMax)},
                                     {"keylen_max", std::to_string(kKeylenMax)},
                                     {"vallen_max", std::to_string(kVallenMax)}}));
  } else if (n == "get_appnum") {
    send(c, format_command("appnum", {{"appnum", std::to_string(cfg.appnum)}}));
  } else if (n == "get_universe_size") {
    send(c, format_command("universe_size", {{"size", std::to_string(cfg.universe_size)}}));
  } else if (n == "get_my_kvsname") {
    send(c, format_command("my_kvsname", {{"kvsname", cfg.kvsname}}));
  } else if (n == "put") {
    on_put(c, cmd);
  } else if (n == "get") {
    on_get(c, cmd);
  } else if (n == "getbyidx") {
    on_getbyidx(c, cmd);
  } else if (n == "barrier_in") {
    on_barrier_in(c, cmd);
  } else if (n == "finalize") {
    on_finalize(c);
  } else if (n == "abort") {
    on_abort(c, cmd, line);
  } else {
    // Every client request waits for exactly one reply line: answer, or it hangs forever.
    send_error(c, "error", fmt::format("unknown command {}", n));
  }
}

void PmiServer::Impl::on_init(Conn& c, const Command& cmd) {
  const std::string* v = cmd.find("pmi_version");
  const std::string* sv = cmd.find("pmi_subversion");
  auto version = v ? parse_int(*v) : std::nullopt;
  auto subversion = sv ? parse_int(*sv) : std::nullopt;
  // The wire protocol is PMI-1.1; a PMI-2 client (pmi_version=2) speaks another dialect.
  bool ok = version == 1 && subversion && *subversion <= 1;
  if (!ok) {
    log::warn("{}: {}: unsupported PMI version {}.{} (this server speaks 1.1)", name, who(c),
              v ? *v : "?", sv ? *sv : "?");
  }
  send(c, format_command("response_to_init",
                         {{"pmi_version", "1"}, {"pmi_subversion", "1"}, {"rc", ok ? "0" : "-1"}}));
}

void PmiServer::Impl::on_initack(Conn& c, const Command& cmd) {
  // A refused initack gets "cmd=error" rather than "cmd=initack": MPICH's client then prints
  // the whole line ("got unexpected input ..."), so the reason reaches the rank's stderr.
  auto refuse = [&](const std::string& why) {
    send_error(c, "error", why);
    c.closing = true;
  };
  const std::string* id_text = cmd.find("pmiid");
  auto id = id_text ? parse_int(*id_text) : std::nullopt;
  if (!id) {
    refuse(fmt::format("initack needs pmiid=<PMI_ID>, got '{}'", id_text ? *id_text : ""));
    return;
  }
  if (c.rank >= 0) {
    refuse(fmt::format("initack pmiid={} on a connection already initialised as rank {}", *id,
                       c.rank));
    return;
  }
  auto slot = slots.find(*id);
  if (slot == slots.end()) {
    refuse(fmt::format("initack pmiid={}: not a rank of this node (local ranks: {})", *id,
                       join_ranks(cfg.local_ranks)));
    return;
  }
  if (slot->second.state == SlotState::Live) {
    auto other = conns.find(slot->second.conn);
    refuse(fmt::format("initack pmiid={}: rank {} is already connected ({})", *id, *id,
                       other != conns.end() ? other->second.peer : "?"));
    return;
  }
  if (slot->second.state == SlotState::Gone) {
    refuse(
        fmt::format("initack pmiid={}: rank {} already ended its PMI session on this server; a "
                    "restarted rank must connect to a new server",
                    *id, *id));
    return;
  }
  slot->second.state = SlotState::Live;
  slot->second.conn = c.id;
  c.rank = *id;
  {
    std::lock_guard<std::mutex> lock(connected_mu);
    connected.insert(*id);
  }
  log::info("{}: rank {} connected from {}", name, *id, c.peer);
  send(c, format_command("initack", {{"rc", "0"}}));
  send(c, format_command("set", {{"size", std::to_string(cfg.job_size)}}));
  send(c, format_command("set", {{"rank", std::to_string(*id)}}));
  send(c, format_command("set", {{"debug", std::to_string(cfg.debug)}}));
}

void PmiServer::Impl::on_put(Conn& c, const Command& cmd) {
  if (!require_rank(c, cmd, "put_result") || !require_kvsname(c, cmd, "put_result")) return;
  const std::string* key = cmd.find("key");
  const std::string* value = cmd.find("value");
  if (!key || key->empty()) {
    send_error(c, "put_result", "put without key=");
    return;
  }
  // Limits include the NUL, as in Hydra's char key[PMI_MAXKEYLEN]; refusing is better than
  // the silent truncation a C server would do.
  if (key->size() >= static_cast<size_t>(kKeylenMax)) {
    send_error(c, "put_result",
               fmt::format("put key {} is longer than {} bytes", *key, kKeylenMax - 1));
    return;
  }
  std::string v = value ? *value : std::string();  // Hydra takes a missing value as ""
  if (v.size() >= static_cast<size_t>(kVallenMax)) {
    send_error(
        c, "put_result",
        fmt::format("put key {}: value of {} bytes exceeds {}", *key, v.size(), kVallenMax - 1));
    return;
  }
  kvs.put(c.rank, *key, std::move(v));
  send(c, format_command("put_result", {{"rc", "0"}, {"msg", "success"}}));
}

void PmiServer::Impl::on_get(Conn& c, const Command& cmd) {
  if (!require_rank(c, cmd, "get_result") || !require_kvsname(c, cmd, "get_result")) return;
  const std::string* key = cmd.find("key");
  if (!key) {
    send_error(c, "get_result", "get without key=");
    return;
  }
  if (const std::string* v = kvs.get(c.rank, *key)) {
    send(c, format_command("get_result", {{"rc", "0"}, {"msg", "success"}, {"value", *v}}));
    return;
  }
  // Not an error worth a warning: MPICH probes optional keys. Hydra's wording.
  log::debug("{}: {}: get {}: not found", name, who(c), *key);
  send(c, format_command("get_result", {{"rc", "-1"},
                                        {"msg", fmt::format("key_{}_not_found", wire_token(*key))},
                                        {"value", "unknown"}}));
}

void PmiServer::Impl::on_getbyidx(Conn& c, const Command& cmd) {
  // Reply format of MPICH's own simple servers (src/pm/util/pmiserv.c); the client reads
  // rc, nextidx, key, val and treats reason=no_more_keyvals as the end.
  if (!require_rank(c, cmd, "getbyidx_results") || !require_kvsname(c, cmd, "getbyidx_results")) {
    return;
  }
  const std::string* idx_text = cmd.find("idx");
  auto idx = idx_text ? parse_int(*idx_text) : std::nullopt;
  if (!idx || *idx < 0) {
    send_error(c, "getbyidx_results",
               fmt::format("getbyidx needs idx=<n> >= 0, got '{}'", idx_text ? *idx_text : ""));
    return;
  }
  auto kv = kvs.at_index(c.rank, static_cast<size_t>(*idx));
  if (!kv) {
    send(c, format_command("getbyidx_results", {{"rc", "-1"}, {"reason", "no_more_keyvals"}}));
    return;
  }
  send(c, format_command("getbyidx_results", {{"rc", "0"},
                                              {"nextidx", std::to_string(*idx + 1)},
                                              {"key", kv->first},
                                              {"val", kv->second}}));
}

void PmiServer::Impl::on_barrier_in(Conn& c, const Command& cmd) {
  if (!require_rank(c, cmd, "error")) return;
  Slot& s = slots.at(c.rank);
  if (s.in_barrier) {
    send_error(c, "error", "barrier_in while already waiting in a barrier");
    return;
  }
  s.in_barrier = true;
  maybe_start_fence();
}

void PmiServer::Impl::on_finalize(Conn& c) {
  send(c, format_command("finalize_ack", {}));
  c.closing = true;  // the client shuts the socket down after reading finalize_ack
  if (c.rank >= 0) {
    log::info("{}: rank {} finalized", name, c.rank);
    rank_gone(c.rank, RankExit::Kind::Finalized, 0, {});
  }
}

void PmiServer::Impl::on_abort(Conn& c, const Command& cmd, std::string_view line) {
  const std::string* code_text = cmd.find("exitcode");
  auto code = code_text ? parse_int(*code_text) : std::nullopt;
  // MPICH 4.0 sends only the exit code. Other clients (Flux's) append error_msg=, taken
  // verbatim up to the end of the line (see handle_line).
  std::string message;
  if (size_t p = line.find(" error_msg="); p != std::string_view::npos) {
    message = std::string(line.substr(p + std::strlen(" error_msg=")));
  }
  int exit_code = code.value_or(1);
  log::error("{}: {} aborted the job: exit code {}{}{}", name, who(c), exit_code,
             message.empty() ? "" : ": ", message);
  // No reply exists for abort: closing makes the client's pending read return so it exits.
  kill(c, "aborted");
  if (c.rank >= 0) rank_gone(c.rank, RankExit::Kind::Aborted, exit_code, std::move(message));
}

void PmiServer::Impl::on_mcmd_line(Conn& c, std::string_view line) {
  // Spawn arrives as "mcmd=spawn" then one key=value per line up to "endcmd", once per
  // command of PMI_Spawn_multiple, and the client reads a single spawn_result at the end.
  if (line.starts_with("totspawns=")) {
    c.mcmd_total = parse_int(line.substr(std::strlen("totspawns="))).value_or(1);
  } else if (line.starts_with("spawnssofar=")) {
    c.mcmd_so_far = parse_int(line.substr(std::strlen("spawnssofar="))).value_or(c.mcmd_total);
  } else if (line == "endcmd") {
    c.in_mcmd = false;
    if (c.mcmd_so_far >= c.mcmd_total) {
      send_error(c, "spawn_result",
                 "spawn (MPI_Comm_spawn) is not supported by crkit's PMI server");
    }
  }
}

void PmiServer::Impl::rank_gone(int rank, RankExit::Kind kind, int exit_code, std::string message) {
  Slot& s = slots.at(rank);
  if (s.state == SlotState::Gone) return;
  s.state = SlotState::Gone;
  {
    std::lock_guard<std::mutex> lock(connected_mu);
    connected.erase(rank);
  }
  if (events.on_rank_exit) {
    events.on_rank_exit(RankExit{rank, kind, exit_code, std::move(message)});
  }
  // A rank that is gone no longer holds the others' barrier.
  maybe_start_fence();
}

void PmiServer::Impl::maybe_start_fence() {
  if (fence_in_flight) return;
  bool someone_waits = false;
  for (const auto& [rank, s] : slots) {
    if (s.state == SlotState::Gone) continue;
    if (s.state != SlotState::Live || !s.in_barrier) return;
    someone_waits = true;
  }
  if (!someone_waits) return;

  fence_in_flight = true;
  uint64_t generation = ++fence_generation;
  fence_batch = kvs.take_pending();
  log::debug("{}: local ranks in barrier {}; fencing {} put(s)", name, generation,
             fence_batch.size());
  fence->fence(fence_batch, [box = mailbox, generation](Result<KvsMap> r) {
    box->post(generation, std::move(r));
  });
}

void PmiServer::Impl::finish_fence(uint64_t generation, Result<KvsMap> result) {
  if (!fence_in_flight || generation != fence_generation) {
    log::warn("{}: fence backend completed barrier {} twice or out of order; ignored", name,
              generation);
    return;
  }
  fence_in_flight = false;
  std::string reply;
  if (result) {
    kvs.apply_fence(fence_batch, *result);
    reply = format_command("barrier_out", {});
    log::debug("{}: barrier {} complete, {} job-wide put(s)", name, generation, result->size());
  } else {
    kvs.restore_pending(fence_batch);
    // Not "barrier_out": MPICH ignores rc there, so only another reply makes PMI_Barrier fail.
    std::string why = fmt::format("job-wide fence failed: {}", result.error().message);
    log::error("{}: barrier {}: {}", name, generation, why);
    reply = format_command("error", {{"rc", "-1"}, {"msg", wire_token(why)}});
  }
  fence_batch.clear();
  for (auto& [rank, s] : slots) {
    if (!s.in_barrier) continue;
    s.in_barrier = false;
    if (s.state != SlotState::Live) continue;
    if (auto it = conns.find(s.conn); it != conns.end()) send(it->second, reply);
  }
}

void PmiServer::Impl::flush(Conn& c) {
  while (!c.out.empty()) {
    ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    kill(c, fmt::format("sending to {}: {}", c.peer, std::strerror(errno)));
    return;
  }
}

void PmiServer::Impl::reap() {
  for (auto it = conns.begin(); it != conns.end();) {
    Conn& c = it->second;
    bool done = c.dead || (c.closing && c.out.empty());
    if (!done) {
      ++it;
      continue;
    }
    int rank = c.rank;
    bool live = rank >= 0 && slots.at(rank).state == SlotState::Live && slots.at(rank).conn == c.id;
    std::string reason = c.dead ? c.dead_reason : std::string("closed");
    log::debug("{}: closing {}: {}", name, who(c), reason);
    it = conns.erase(it);  // closes the socket
    accept_paused = false;
    if (live) {
      log::warn("{}: rank {} disconnected before PMI finalize: {}", name, rank, reason);
      rank_gone(rank, RankExit::Kind::Disconnected, -1,
                fmt::format("PMI connection lost before finalize: {}", reason));
    }
  }
}

void PmiServer::Impl::shut_down() {
  mailbox->close();
  if (fence_in_flight) log::debug("{}: stopping with barrier {} in flight", name, fence_generation);
  conns.clear();
  listen_fd.reset();
  std::lock_guard<std::mutex> lock(connected_mu);
  connected.clear();
}

Result<std::unique_ptr<PmiServer>> PmiServer::start(ServerConfig config,
                                                    std::shared_ptr<FenceBackend> fence,
                                                    ServerEvents events) {
  if (!fence) return fail(EINVAL, "PMI server: no fence backend given");
  if (config.job_size < 1) {
    return fail(EINVAL, fmt::format("PMI server: job size {} is not positive", config.job_size));
  }
  if (config.local_ranks.empty()) return fail(EINVAL, "PMI server: no local ranks given");
  for (int r : config.local_ranks) {
    if (r < 0 || r >= config.job_size) {
      return fail(EINVAL, fmt::format("PMI server: local rank {} is outside the job (size {})", r,
                                      config.job_size));
    }
  }
  // The kvsname travels as a wire value, so it must survive the client's tokenizer.
  if (config.kvsname.empty() || config.kvsname.size() >= static_cast<size_t>(kKvsnameMax) ||
      wire_token(config.kvsname) != config.kvsname ||
      config.kvsname.find('=') != std::string::npos) {
    return fail(EINVAL, fmt::format("PMI server: kvsname '{}' must be 1..{} printable characters "
                                    "without blanks or '='",
                                    config.kvsname, kKvsnameMax - 1));
  }
  if (config.universe_size == 0) config.universe_size = config.job_size;

  std::string where = fmt::format("{}:{}", config.bind_address, config.port);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(config.port);
  if (::inet_pton(AF_INET, config.bind_address.c_str(), &addr.sin_addr) != 1) {
    return fail(EINVAL, fmt::format("PMI server: bind address '{}' is not an IPv4 address",
                                    config.bind_address));
  }
  // CLOEXEC: the agent forks the ranks, which must not inherit the listening socket.
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno(fmt::format("PMI server: creating a TCP socket for {}", where));
  int one = 1;
  // A restart may reuse a fixed port whose old connections sit in TIME_WAIT.
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    return fail_errno(fmt::format("PMI server: SO_REUSEADDR on {}", where));
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return fail_errno(fmt::format("PMI server: binding {}", where));
  }
  if (::listen(fd.get(), SOMAXCONN) != 0) {
    return fail_errno(fmt::format("PMI server: listening on {}", where));
  }
  socklen_t len = sizeof addr;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return fail_errno(fmt::format("PMI server: reading the port bound for {}", where));
  }
  CRKIT_ASSIGN(auto box, Mailbox::create());

  auto impl = std::make_unique<Impl>();
  impl->port = ntohs(addr.sin_port);
  impl->name = fmt::format("PMI server {}:{}", config.bind_address, impl->port);
  for (int r : config.local_ranks) impl->slots.emplace(r, Slot{});
  impl->kvs = Kvs(config.job_attributes);
  impl->cfg = std::move(config);
  impl->fence = std::move(fence);
  impl->events = std::move(events);
  impl->listen_fd = std::move(fd);
  impl->mailbox = std::move(box);
  log::info("{}: serving job {} (size {}), local ranks {}", impl->name, impl->cfg.kvsname,
            impl->cfg.job_size, join_ranks(impl->cfg.local_ranks));
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<PmiServer>(new PmiServer(std::move(impl)));
}

PmiServer::PmiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PmiServer::~PmiServer() {
  stop();
}

uint16_t PmiServer::port() const {
  return impl_->port;
}

std::string PmiServer::pmi_port() const {
  const std::string& a = impl_->cfg.bind_address;
  return fmt::format("{}:{}", a == "0.0.0.0" ? "127.0.0.1" : a, impl_->port);
}

std::set<int> PmiServer::connected_ranks() const {
  std::lock_guard<std::mutex> lock(impl_->connected_mu);
  return impl_->connected;
}

void PmiServer::stop() {
  impl_->stop_requested.store(true, std::memory_order_release);
  impl_->mailbox->wake();
  if (tl_serving == impl_.get()) return;  // inside an event callback: the loop ends on return
  std::lock_guard<std::mutex> lock(impl_->join_mu);
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::string process_mapping_block(int nodes, int ranks_per_node) {
  return fmt::format("(vector,(0,{},{}))", nodes, ranks_per_node);
}

}  // namespace crkit::pmi
