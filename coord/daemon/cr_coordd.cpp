// cr_coordd — the coordinator of checkpointable MPI jobs (DESIGN.md decision 8).
//
// It knows the jobs, their ranks and nodes (one cr_agent per node per job connects to it),
// serves the job-wide part of PMI (fences), and drives global snapshots:
//   request -> every agent checkpoints its node's ranks (MPICH's libcr callback drains the
//   channels first) -> all node images reported -> the manifest is committed atomically ->
//   the job continues (or ends, with --term).
// A failure or timeout of any node abandons the snapshot: no manifest, its directory is
// removed, the job keeps running. Protocol: coord/protocol/messages.md.
#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/log.hpp"
#include "common/result.hpp"
#include "pmi/pmi_server.hpp"
#include "protocol/channel.hpp"
#include "protocol/token.hpp"
#include "snapshot/manifest.hpp"

namespace {

// "ADDRESS:PORT" of a connecting peer, for the log.
std::string peer_name(const struct sockaddr_storage& sa) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (sa.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const struct sockaddr_in*>(&sa);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (sa.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const struct sockaddr_in6*>(&sa);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  }
  return fmt::format("{}:{}", host, port);
}

using crkit::Result;
using crkit::Status;
using crkit::UniqueFd;
using crkit::coord::Channel;
using crkit::coord::Json;
using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

struct Node {
  std::string host;
  std::vector<int> ranks;
  int conn = -1;  // the agent's connection
  bool started = false;
  bool exited = false;
  bool fenced = false;
  int status = 0;
};

struct SnapshotRun {
  uint64_t seq = 0;
  bool term = false;
  int requester = -1;  // client connection, -1 for a periodic snapshot
  std::string dir;
  Clock::time_point start, deadline;
  std::map<int, Json> done;  // node -> its checkpoint_done
  std::set<int> prepared;    // nodes ready to checkpoint (phase 1)
  bool started = false;      // phase 2: the agents were told to checkpoint
  std::vector<Json> orders;  // node -> its checkpoint message
  bool failed = false;
  // Abandoned after phase 2 began: how long the nodes get to confirm their cancellation
  // before the coordinator gives up on them (else one hung node would block every later
  // snapshot of the job).
  std::optional<Clock::time_point> abort_deadline;
  std::string error;
  int code = 0;
};

constexpr auto kAbortGrace = std::chrono::seconds(30);

struct Job {
  std::string id;
  Json spec;
  int nranks = 0;
  std::vector<Node> nodes;
  enum class State { Starting, Running, Finished } state = State::Starting;
  int exit_code = 0;
  std::string message;
  bool killing = false;
  std::vector<int> waiters;
  std::string job_dir;  // CKPT_DIR/JOB
  uint64_t next_seq = 1;
  std::optional<SnapshotRun> snap;
  Clock::time_point submitted = Clock::now();
  Clock::time_point next_periodic{};
  Json puts = Json::object();  // the current fence's puts
  std::string kvsname;
  std::optional<crkit::coord::Manifest> restart_from;
  std::string restart_dir;
  std::vector<std::vector<size_t>> node_images;  // restart: node -> its images
  bool terminated_by_snapshot = false;
};

struct Conn {
  Channel ch;
  bool authenticated = false;  // its first message carried the token
  std::string job;             // for agents
  int node = -1;
  bool agent = false;
};

class Coordinator {
 public:
  Coordinator(UniqueFd listen, bool priv, std::string token)
      : listen_(std::move(listen)), private_(priv), token_(std::move(token)) {}
  int run();

 private:
  void on_message(int cid, const Json& m);
  void on_client(int cid, const Json& m);
  void on_agent(int cid, Job& job, const Json& m);
  void on_closed(int cid);
  void reply(int cid, Json m);
  void refuse(int cid, int code, const std::string& why);
  void send_node(Job& job, int node, const Json& m);
  Status submit(int cid, const Json& spec);
  void start_snapshot(Job& job, int requester, bool term, int timeout_s);
  void snapshot_progress(Job& job);
  void abandon(Job& job, const std::string& why, int code);
  void kill_job(Job& job, const std::string& why, int code);
  void node_exited(Job& job, int node, int status, const std::string& msg);
  void complete_fence(Job& job);
  void finish(Job& job);
  void timers();
  Json job_status(const Job& job) const;
  Job* find(const std::string& id) {
    auto it = jobs_.find(id);
    return it == jobs_.end() ? nullptr : &it->second;
  }

  UniqueFd listen_;
  bool private_;
  std::string token_;
  bool had_job_ = false;
  int next_conn_ = 0;
  std::map<int, Conn> conns_;
  std::map<std::string, Job> jobs_;
  Clock::time_point started_ = Clock::now();
};

void Coordinator::reply(int cid, Json m) {
  auto it = conns_.find(cid);
  if (it == conns_.end()) return;
  if (Status s = it->second.ch.send(m); !s) crkit::log::warn("{}", s.error().message);
}

void Coordinator::refuse(int cid, int code, const std::string& why) {
  reply(cid, {{"ok", false}, {"error", why}, {"code", code}});
}

void Coordinator::send_node(Job& job, int node, const Json& m) {
  int c = job.nodes[static_cast<size_t>(node)].conn;
  if (c >= 0) reply(c, m);
}

Status Coordinator::submit(int cid, const Json& spec) {
  Job job;
  job.spec = spec;
  job.id = spec.value("job", std::string());
  if (job.id.empty()) job.id = fmt::format("job{}", jobs_.size() + 1);
  if (job.id.front() == '.')
    return crkit::fail(EINVAL, fmt::format("job name '{}' must not start with '.'", job.id));
  for (char ch : job.id)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.'))
      return crkit::fail(EINVAL, fmt::format("job name '{}': only letters, digits, '-', '_' and "
                                             "'.' are allowed",
                                             job.id));
  if (auto* j = find(job.id); j && j->state != Job::State::Finished)
    return crkit::fail(EEXIST, fmt::format("a job named '{}' is already running", job.id));
  job.nranks = spec.value("nranks", 0);
  if (job.nranks <= 0) return crkit::fail(EINVAL, "the job has no ranks");
  std::vector<int> seen(static_cast<size_t>(job.nranks), 0);
  for (const auto& n : spec.at("nodes")) {
    Node node;
    node.host = n.at("host").get<std::string>();
    node.ranks = n.at("ranks").get<std::vector<int>>();
    for (int r : node.ranks) {
      if (r < 0 || r >= job.nranks || seen[static_cast<size_t>(r)]++)
        return crkit::fail(EINVAL, fmt::format("rank {} is out of range or placed twice", r));
    }
    job.nodes.push_back(std::move(node));
  }
  for (size_t r = 0; r < seen.size(); ++r)
    if (!seen[r]) return crkit::fail(EINVAL, fmt::format("rank {} is placed on no node", r));
  const std::string ckdir = spec.value("checkpoint_dir", std::string());
  if (ckdir.empty() || ckdir.front() != '/')
    return crkit::fail(EINVAL, "checkpoint_dir must be an absolute path");
  job.job_dir = ckdir + "/" + job.id;
  job.kvsname = "crkit_" + job.id;
  if (spec.contains("restart") && spec["restart"].is_object()) {
    const std::string mpath = spec["restart"].at("manifest").get<std::string>();
    CRKIT_ASSIGN(auto man, crkit::coord::read_manifest(mpath));
    if (man.nranks != job.nranks)
      return crkit::fail(EINVAL, fmt::format("{}: the snapshot has {} ranks, the request {}", mpath,
                                             man.nranks, job.nranks));
    // Every image goes whole onto the node that is to run all of its ranks.
    job.node_images.assign(job.nodes.size(), {});
    for (size_t i = 0; i < man.images.size(); ++i) {
      size_t k = 0;
      for (; k < job.nodes.size(); ++k) {
        const auto& nr = job.nodes[k].ranks;
        if (std::all_of(man.images[i].ranks.begin(), man.images[i].ranks.end(),
                        [&](int r) { return std::find(nr.begin(), nr.end(), r) != nr.end(); }))
          break;
      }
      if (k == job.nodes.size())
        return crkit::fail(
            EINVAL, fmt::format("{}: image {} holds ranks {}, which the request "
                                "does not place on one node (they share memory)",
                                mpath, man.images[i].path, Json(man.images[i].ranks).dump()));
      job.node_images[k].push_back(i);
    }
    for (size_t k = 0; k < job.nodes.size(); ++k)
      if (job.node_images[k].empty())
        return crkit::fail(EINVAL, fmt::format("node {} ({}) would get no image of {}", k,
                                               job.nodes[k].host, mpath));
    // MPICH keeps the key space's name across a restart (mpir_pmi.c caches it).
    job.kvsname = "crkit_" + man.job;
    std::filesystem::path p(mpath);
    job.restart_dir = std::filesystem::is_directory(p) ? p.string() : p.parent_path().string();
    job.restart_from = std::move(man);
  }
  std::error_code ec;
  std::filesystem::create_directories(job.job_dir, ec);
  if (ec) return crkit::fail(ec.value(), fmt::format("creating {}: {}", job.job_dir, ec.message()));
  ::chmod(job.job_dir.c_str(), 0700);
  if (auto prev = crkit::coord::list_snapshots(job.job_dir); prev && !prev->empty())
    job.next_seq = prev->back() + 1;
  const int interval = spec.value("interval", 0);
  if (interval > 0) job.next_periodic = Clock::now() + std::chrono::seconds(interval);
  crkit::log::info("job {}: {} ranks on {} nodes{}", job.id, job.nranks, job.nodes.size(),
                   job.restart_from ? " (restart)" : "");
  const std::string id = job.id;
  jobs_[id] = std::move(job);
  had_job_ = true;
  reply(cid, {{"ok", true}, {"job", id}});
  return {};
}

Json Coordinator::job_status(const Job& job) const {
  Json nodes = Json::array();
  for (const auto& n : job.nodes)
    nodes.push_back({{"host", n.host},
                     {"ranks", n.ranks},
                     {"connected", n.conn >= 0},
                     {"started", n.started},
                     {"exited", n.exited},
                     {"status", n.status}});
  Json j = {{"job", job.id},
            {"state", job.state == Job::State::Starting  ? "starting"
                      : job.state == Job::State::Running ? "running"
                                                         : "finished"},
            {"nranks", job.nranks},
            {"nodes", nodes},
            {"checkpoint_dir", job.job_dir}};
  if (job.state == Job::State::Finished) {
    j["exit_code"] = job.exit_code;
    j["message"] = job.message;
  }
  if (job.snap)
    j["snapshot"] = {{"seq", job.snap->seq},
                     {"dir", job.snap->dir},
                     {"nodes_done", job.snap->done.size()},
                     {"nodes", job.nodes.size()},
                     {"elapsed_ms", ms_between(job.snap->start, Clock::now())}};
  return j;
}

void Coordinator::start_snapshot(Job& job, int requester, bool term, int timeout_s) {
  SnapshotRun s;
  s.seq = job.next_seq++;
  s.term = term;
  s.requester = requester;
  s.dir = job.job_dir + "/" + crkit::coord::snapshot_dir_name(s.seq);
  s.start = Clock::now();
  s.deadline = timeout_s > 0 ? s.start + std::chrono::seconds(timeout_s)
                             : Clock::time_point::max();  // 0: no limit
  std::error_code ec;
  std::filesystem::create_directories(s.dir, ec);
  if (ec) {
    if (requester >= 0)
      refuse(requester, ec.value(), fmt::format("creating {}: {}", s.dir, ec.message()));
    return;
  }
  ::chmod(s.dir.c_str(), 0700);
  crkit::log::info("job {}: snapshot {} into {}", job.id, s.seq, s.dir);
  // Two steps: every agent first checks that it can write its images ("prepare"); only then
  // are all told to checkpoint. Once the ranks' channel drain (MPICH's marker wave) has begun,
  // every rank must take part: a node refusing then would leave the others waiting for it.
  for (size_t k = 0; k < job.nodes.size(); ++k) {
    s.orders.push_back({{"op", "checkpoint"},
                        {"seq", s.seq},
                        {"dir", s.dir},
                        {"image", fmt::format("{}/node-{}.img", s.dir, k)},
                        {"term", term}});
    Json prep = s.orders.back();
    prep["op"] = "prepare";
    send_node(job, static_cast<int>(k), prep);
  }
  job.snap = std::move(s);
}

void Coordinator::abandon(Job& job, const std::string& why, int code) {
  if (!job.snap || job.snap->failed) return;
  job.snap->failed = true;
  job.snap->error = why;
  job.snap->code = code;
  crkit::log::error("job {}: snapshot {} abandoned: {}", job.id, job.snap->seq, why);
  if (!job.snap->started) {  // nobody checkpoints yet: nothing to cancel or wait for
    for (size_t k = 0; k < job.nodes.size(); ++k)
      job.snap->done.emplace(static_cast<int>(k), Json::object());
    snapshot_progress(job);
    return;
  }
  for (size_t k = 0; k < job.nodes.size(); ++k)
    if (!job.snap->done.count(static_cast<int>(k)) && !job.nodes[k].exited)
      send_node(job, static_cast<int>(k),
                {{"op", "checkpoint_abort"}, {"seq", job.snap->seq}, {"reason", why}});
  job.snap->abort_deadline = Clock::now() + kAbortGrace;
  snapshot_progress(job);
}

// Called whenever a node answered (or died): commits or abandons once every live node has.
void Coordinator::snapshot_progress(Job& job) {
  if (!job.snap) return;
  SnapshotRun& s = *job.snap;
  for (size_t k = 0; k < job.nodes.size(); ++k)
    if (!s.done.count(static_cast<int>(k)) && !job.nodes[k].exited && job.nodes[k].conn >= 0)
      return;  // still waiting for this node
  if (!s.failed && s.done.size() < job.nodes.size()) {
    s.failed = true;
    s.error = "a node ended before its image was written";
    s.code = EIO;
  }
  const auto now = Clock::now();
  if (s.failed) {
    if (Status rm = crkit::coord::remove_partial(s.dir); !rm)
      crkit::log::warn("job {}: removing the abandoned snapshot {}: {}", job.id, s.dir,
                       rm.error().message);
    if (s.term) job.terminated_by_snapshot = false;
    if (s.requester >= 0)
      refuse(s.requester, s.code ? s.code : EIO, s.error);  // the client says "abandoned"
    job.snap.reset();
    return;
  }
  crkit::coord::Manifest m;
  m.job = job.id;
  m.seq = s.seq;
  m.created = crkit::coord::iso8601_utc_now();
  m.nranks = job.nranks;
  double quiesce = 0, dump = 0;
  for (size_t k = 0; k < job.nodes.size(); ++k) {
    const Json& d = s.done[static_cast<int>(k)];
    // An image per node, or (all traffic over TCP) per rank: each is a "node" of the manifest.
    for (const auto& im : d.at("images")) {
      crkit::coord::ImageEntry e;
      e.node = static_cast<int>(m.hosts.size());
      e.host = job.nodes[k].host;
      m.hosts.push_back(e.host);
      e.ranks = im.at("ranks").get<std::vector<int>>();
      e.path = std::filesystem::path(im.at("image").get<std::string>()).filename().string();
      e.size = im.value("size", uint64_t{0});
      e.xxh64 = im.value("xxh64", std::string());
      m.images.push_back(std::move(e));
    }
    quiesce = std::max(quiesce, d.value("quiesce_ms", 0.0));
    dump = std::max(dump, d.value("dump_ms", 0.0));
  }
  m.argv = job.spec.value("argv", std::vector<std::string>{});
  m.cwd = job.spec.value("cwd", std::string());
  const Json env = job.spec.value("env", Json::object());  // items() must not outlive it
  for (auto& [k, v] : env.items()) m.env[k] = v.get<std::string>();
  m.mpi = job.spec.value("mpi", std::string("MPICH ch3:nemesis:tcp"));
  m.crkit_version = CRKIT_VERSION;
  m.nolocal = job.spec.value("nolocal", false);
  m.timings_ms["quiesce"] = quiesce;
  m.timings_ms["dump"] = dump;
  m.timings_ms["total"] = ms_between(s.start, now);
  if (Status w = crkit::coord::write_manifest_atomic(s.dir, m); !w) {
    crkit::log::error("job {}: committing snapshot {}: {}", job.id, s.seq, w.error().message);
    (void)crkit::coord::remove_partial(s.dir);
    if (s.requester >= 0)
      refuse(s.requester, w.error().code,
             fmt::format("snapshot {} of job {} abandoned: {}", s.seq, job.id, w.error().message));
    job.snap.reset();
    return;
  }
  crkit::log::info("job {}: snapshot {} committed ({} ms: quiesce {} ms, dump {} ms)", job.id,
                   s.seq, m.timings_ms["total"], quiesce, dump);
  if (size_t keep = job.spec.value("keep", 0); keep > 0)
    if (Status p = crkit::coord::prune_snapshots(job.job_dir, keep); !p)
      crkit::log::warn("job {}: pruning old snapshots: {}", job.id, p.error().message);
  if (s.requester >= 0)
    reply(s.requester, {{"ok", true},
                        {"job", job.id},
                        {"seq", s.seq},
                        {"dir", s.dir},
                        {"manifest", s.dir + "/" + crkit::coord::kManifestName},
                        {"quiesce_ms", quiesce},
                        {"dump_ms", dump},
                        {"total_ms", m.timings_ms["total"]}});
  if (s.term) {
    job.terminated_by_snapshot = true;
    for (size_t k = 0; k < job.nodes.size(); ++k)
      if (!job.nodes[k].exited) send_node(job, static_cast<int>(k), {{"op", "terminate"}});
  }
  job.snap.reset();
}

void Coordinator::kill_job(Job& job, const std::string& why, int code) {
  if (job.state == Job::State::Finished || job.killing) return;
  job.killing = true;
  if (job.exit_code == 0) {
    job.exit_code = code;
    job.message = why;
  }
  crkit::log::error("job {}: {}", job.id, why);
  abandon(job, why, EIO);
  // A node whose agent never connected has nothing to kill: it is done.
  for (size_t k = 0; k < job.nodes.size(); ++k)
    if (job.nodes[k].conn < 0 && !job.nodes[k].exited) {
      job.nodes[k].exited = true;
      job.nodes[k].status = code;
    }
  if (std::all_of(job.nodes.begin(), job.nodes.end(), [](const Node& n) { return n.exited; })) {
    finish(job);
    return;
  }
  for (size_t k = 0; k < job.nodes.size(); ++k)
    if (!job.nodes[k].exited)
      send_node(job, static_cast<int>(k), {{"op", "kill"}, {"reason", why}});
}

// A PMI fence is complete when every live node has entered it: each gets this round's puts.
void Coordinator::complete_fence(Job& job) {
  bool any = false;
  for (const auto& x : job.nodes) {
    if (!x.exited && !x.fenced) return;
    any = any || x.fenced;
  }
  if (!any) return;
  for (size_t k = 0; k < job.nodes.size(); ++k)
    if (!job.nodes[k].exited) {
      job.nodes[k].fenced = false;
      send_node(job, static_cast<int>(k), {{"op", "fence_done"}, {"kvs", job.puts}});
    }
  job.puts = Json::object();
}

void Coordinator::node_exited(Job& job, int node, int status, const std::string& msg) {
  Node& n = job.nodes[static_cast<size_t>(node)];
  if (n.exited) return;
  n.exited = true;
  n.status = status;
  if (status != 0) {
    if (job.exit_code == 0) {
      job.exit_code = status;
      job.message = msg;
    }
    kill_job(
        job,
        msg.empty() ? fmt::format("node {} ({}) ended with status {}", node, n.host, status) : msg,
        status);
  }
  complete_fence(job);  // it may have waited for this node only
  // Its ranks are gone: a snapshot still in its first phase cannot include them.
  if (job.snap && !job.snap->started)
    abandon(job, fmt::format("the ranks of node {} ({}) ended before the snapshot", node, n.host),
            ESRCH);
  snapshot_progress(job);
  for (auto& x : job.nodes)
    if (!x.exited) return;
  finish(job);
}

void Coordinator::finish(Job& job) {
  const bool was = job.state == Job::State::Finished;
  job.state = Job::State::Finished;
  if (!was)
    crkit::log::info("job {}: ended with status {}{}", job.id, job.exit_code,
                     job.message.empty() ? "" : ": " + job.message);
  for (int w : job.waiters)
    reply(w, {{"ok", true},
              {"job", job.id},
              {"exit_code", job.exit_code},
              {"message", job.message},
              {"terminated_by_snapshot", job.terminated_by_snapshot}});
  job.waiters.clear();
}

void Coordinator::on_agent(int cid, Job& job, const Json& m) {
  const std::string op = m.value("op", std::string());
  const int node = conns_[cid].node;
  Node& n = job.nodes[static_cast<size_t>(node)];
  if (op == "fence") {
    for (auto& [k, v] : m.at("puts").items()) job.puts[k] = v;
    n.fenced = true;
    complete_fence(job);
  } else if (op == "started") {
    n.started = true;
    for (auto& x : job.nodes)
      if (!x.started) return;
    job.state = Job::State::Running;
    crkit::log::info("job {}: all {} nodes running", job.id, job.nodes.size());
  } else if (op == "failed") {
    // The agent's error names its node already.
    node_exited(job, node, m.value("code", 1) ? m.value("code", 1) : 1,
                m.value("error", fmt::format("node {} ({}) failed", node, n.host)));
  } else if (op == "prepared") {
    if (!job.snap || job.snap->started || m.value("seq", uint64_t{0}) != job.snap->seq) return;
    if (!m.value("ok", false))
      return abandon(job, m.value("error", std::string("a node is not ready")), EIO);
    job.snap->prepared.insert(node);
    for (size_t k = 0; k < job.nodes.size(); ++k)
      if (!job.snap->prepared.count(static_cast<int>(k))) return;
    job.snap->started = true;
    for (size_t k = 0; k < job.nodes.size(); ++k)
      send_node(job, static_cast<int>(k), job.snap->orders[k]);
  } else if (op == "checkpoint_done") {
    if (!job.snap || m.value("seq", uint64_t{0}) != job.snap->seq) return;
    job.snap->done[node] = m;
    if (!m.value("ok", false))
      abandon(job, m.value("error", std::string("checkpoint failed")), EIO);
    snapshot_progress(job);
  } else if (op == "rank_exited") {
    const std::string what =
        fmt::format("rank {} on node {} ({}) ended with {}", m.value("rank", -1), node, n.host,
                    m.value("message", std::string()));
    if (job.snap) abandon(job, what + " during the snapshot", ESRCH);
    // As mpiexec does: the others would wait for it forever.
    kill_job(job, what, m.value("status", 1));
  } else if (op == "exited") {
    node_exited(job, node, m.value("status", 0), m.value("message", std::string()));
  }
}

void Coordinator::on_client(int cid, const Json& m) {
  const std::string op = m.value("op", std::string());
  if (op == "submit") {
    if (Status s = submit(cid, m.value("spec", Json::object())); !s)
      refuse(cid, s.error().code, s.error().message);
    return;
  }
  if (op == "jobs") {
    Json list = Json::array();
    for (auto& [id, j] : jobs_) list.push_back(job_status(j));
    reply(cid, {{"ok", true}, {"jobs", list}});
    return;
  }
  if (op == "shutdown") {
    reply(cid, {{"ok", true}});
    for (auto& [id, j] : jobs_) kill_job(j, "the coordinator shuts down", 143);
    private_ = true;
    had_job_ = true;
    return;
  }
  const std::string id = m.value("job", std::string());
  Job* job = find(id);
  if (!job) return refuse(cid, ESRCH, fmt::format("no job '{}' at this coordinator", id));
  if (op == "status") {
    reply(cid, {{"ok", true}, {"job", job_status(*job)}});
  } else if (op == "wait") {
    if (job->state == Job::State::Finished) {
      job->waiters.push_back(cid);
      finish(*job);
    } else {
      job->waiters.push_back(cid);
    }
  } else if (op == "kill") {
    kill_job(*job, m.value("reason", std::string("killed on request")), 137);
    reply(cid, {{"ok", true}});
  } else if (op == "list") {
    Json list = Json::array();
    if (auto seqs = crkit::coord::list_snapshots(job->job_dir))
      for (uint64_t s : *seqs) {
        std::string dir = job->job_dir + "/" + crkit::coord::snapshot_dir_name(s);
        auto man = crkit::coord::read_manifest(dir);
        list.push_back({{"seq", s}, {"dir", dir}, {"created", man ? man->created : ""}});
      }
    reply(cid, {{"ok", true}, {"job", id}, {"snapshots", list}});
  } else if (op == "snapshot") {
    if (job->state != Job::State::Running || job->killing)
      return refuse(
          cid, EAGAIN,
          fmt::format("job {} is {}", id,
                      job->state == Job::State::Starting ? "still starting" : "not running"));
    if (job->snap)
      return refuse(cid, EBUSY,
                    fmt::format("snapshot {} of job {} is still in progress", job->snap->seq, id));
    for (size_t k = 0; k < job->nodes.size(); ++k)
      if (job->nodes[k].exited)
        return refuse(cid, EAGAIN,
                      fmt::format("job {} is finishing: the ranks of node {} ({}) have ended", id,
                                  k, job->nodes[k].host));
    start_snapshot(*job, cid, m.value("term", false), m.value("timeout", 600));
  } else {
    refuse(cid, EINVAL, fmt::format("unknown request '{}'", op));
  }
}

void Coordinator::on_message(int cid, const Json& m) {
  Conn& c = conns_[cid];
  const std::string op = m.value("op", std::string());
  if (!c.authenticated) {
    auto t = m.find("token");
    if (t == m.end() || !t->is_string() ||
        !crkit::coord::token_equal(t->get<std::string>(), token_)) {
      crkit::log::warn("{}: refused: {} token", c.ch.peer(), t == m.end() ? "no" : "a wrong");
      refuse(cid, EACCES,
             fmt::format("authentication failed: the request carries {} token (the job's "
                         "tools find it in their registry record; see cr_coordd --help)",
                         t == m.end() ? "no" : "a wrong"));
      c.ch.close();
      return;
    }
    c.authenticated = true;
  }
  if (op == "agent_hello") {
    Job* job = find(m.value("job", std::string()));
    const int node = m.value("node", -1);
    if (!job || node < 0 || node >= static_cast<int>(job->nodes.size()) ||
        job->nodes[static_cast<size_t>(node)].conn >= 0 || job->state == Job::State::Finished ||
        job->killing || job->nodes[static_cast<size_t>(node)].exited) {
      reply(cid, {{"op", "kill"}, {"reason", "unknown job or node"}});
      c.ch.close();
      return;
    }
    c.agent = true;
    c.job = job->id;
    c.node = node;
    Node& n = job->nodes[static_cast<size_t>(node)];
    n.conn = cid;
    Json start = {{"op", "start"},
                  {"mode", job->restart_from ? "restart" : "launch"},
                  {"ranks", n.ranks},
                  {"nranks", job->nranks},
                  {"kvsname", job->kvsname},
                  {"argv", job->spec.value("argv", Json::array())},
                  {"env", job->spec.value("env", Json::object())},
                  {"cwd", job->spec.value("cwd", std::string("/"))},
                  {"pid_namespace", job->spec.value("pid_namespace", std::string("auto"))}};
    // Block mapping with the same number of ranks on every node: tell MPICH which ranks share
    // a node (else it exchanges host names).
    bool uniform = true;
    for (size_t k = 0; k < job->nodes.size(); ++k) {
      const auto& rk = job->nodes[k].ranks;
      if (rk.size() != job->nodes[0].ranks.size()) uniform = false;
      for (size_t i = 0; i < rk.size(); ++i)
        if (rk[i] != static_cast<int>(k * job->nodes[0].ranks.size() + i)) uniform = false;
    }
    if (uniform)
      start["ppn_map"] = crkit::pmi::process_mapping_block(
          static_cast<int>(job->nodes.size()), static_cast<int>(job->nodes[0].ranks.size()));
    start["per_rank_images"] = job->spec.value("nolocal", false);
    if (job->restart_from) {
      Json images = Json::array();
      for (size_t i : job->node_images[static_cast<size_t>(node)])
        images.push_back({{"path", job->restart_dir + "/" + job->restart_from->images[i].path},
                          {"ranks", job->restart_from->images[i].ranks}});
      start["images"] = images;
    }
    reply(cid, start);
    crkit::log::info("job {}: node {} ({}) connected", job->id, node, n.host);
    return;
  }
  if (c.agent) {
    if (Job* job = find(c.job)) on_agent(cid, *job, m);
    return;
  }
  on_client(cid, m);
}

void Coordinator::on_closed(int cid) {
  Conn& c = conns_[cid];
  if (c.agent) {
    if (Job* job = find(c.job)) {
      Node& n = job->nodes[static_cast<size_t>(c.node)];
      n.conn = -1;
      if (!n.exited)
        node_exited(*job, c.node, 255,
                    fmt::format("lost contact with the agent of node {} ({})", c.node, n.host));
    }
  } else {
    for (auto& [id, job] : jobs_) {
      // A private coordinator's job belongs to the cr_mpirun waiting for it: gone, it ends.
      if (private_ && job.state != Job::State::Finished &&
          std::find(job.waiters.begin(), job.waiters.end(), cid) != job.waiters.end()) {
        std::erase(job.waiters, cid);
        kill_job(job, "cr_mpirun, which started the job, is gone", 137);
      }
      std::erase(job.waiters, cid);
      if (job.snap && job.snap->requester == cid) job.snap->requester = -1;
    }
  }
  conns_.erase(cid);
}

void Coordinator::timers() {
  const auto now = Clock::now();
  for (auto& [id, job] : jobs_) {
    if (job.state == Job::State::Finished) continue;
    if (job.state == Job::State::Starting && now - job.submitted > std::chrono::seconds(120)) {
      std::string missing;
      for (size_t k = 0; k < job.nodes.size(); ++k)
        if (!job.nodes[k].started) missing += fmt::format(" {} ({})", k, job.nodes[k].host);
      kill_job(job, "nodes did not start within 120 s:" + missing, 1);
      for (size_t k = 0; k < job.nodes.size(); ++k)
        if (job.nodes[k].conn < 0) node_exited(job, static_cast<int>(k), 1, "");
      continue;
    }
    if (job.snap && !job.snap->failed && now > job.snap->deadline) {
      std::string missing;
      for (size_t k = 0; k < job.nodes.size(); ++k)
        if (!job.snap->done.count(static_cast<int>(k)))
          missing += fmt::format(" {} ({})", k, job.nodes[k].host);
      abandon(job, "timed out waiting for node(s)" + missing, ETIMEDOUT);
    } else if (job.snap && job.snap->abort_deadline && now > *job.snap->abort_deadline) {
      for (size_t k = 0; k < job.nodes.size(); ++k)
        if (job.snap->done.emplace(static_cast<int>(k), Json::object()).second)
          crkit::log::error(
              "job {}: node {} ({}) did not confirm the cancellation of snapshot "
              "{} within {} s; giving up on it",
              job.id, k, job.nodes[k].host, job.snap->seq, kAbortGrace.count());
      snapshot_progress(job);
    }
    const int interval = job.spec.value("interval", 0);
    if (interval > 0 && job.state == Job::State::Running && !job.snap && !job.killing &&
        now >= job.next_periodic &&
        std::none_of(job.nodes.begin(), job.nodes.end(), [](const Node& n) { return n.exited; })) {
      job.next_periodic = now + std::chrono::seconds(interval);
      start_snapshot(job, -1, false, 600);
    }
  }
}

int Coordinator::run() {
  for (;;) {
    if (private_ && had_job_) {
      bool active = false;
      for (auto& [id, j] : jobs_)
        if (j.state != Job::State::Finished || !j.waiters.empty()) active = true;
      if (!active) return 0;
    }
    if (private_ && !had_job_ && Clock::now() - started_ > std::chrono::seconds(120)) {
      crkit::log::error("no job was submitted within 120 s; exiting");
      return 1;
    }
    std::vector<struct pollfd> pfds{{listen_.get(), POLLIN, 0}};
    std::vector<int> ids;
    for (auto& [id, c] : conns_) {
      pfds.push_back({c.ch.fd(), POLLIN, 0});
      ids.push_back(id);
    }
    int r = ::poll(pfds.data(), pfds.size(), 200);
    if (r < 0 && errno != EINTR) {
      crkit::log::error("poll: {}", std::strerror(errno));
      return 1;
    }
    if (pfds[0].revents & POLLIN) {
      for (;;) {
        struct sockaddr_storage sa {};
        socklen_t len = sizeof sa;
        UniqueFd fd(::accept4(listen_.get(), reinterpret_cast<struct sockaddr*>(&sa), &len,
                              SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!fd) break;
        int id = next_conn_++;
        Conn c;
        c.ch = Channel(std::move(fd), fmt::format("connection {} from {}", id, peer_name(sa)));
        conns_[id] = std::move(c);
      }
    }
    for (size_t i = 1; i < pfds.size(); ++i) {
      if (!pfds[i].revents) continue;
      const int id = ids[i - 1];
      if (!conns_.count(id)) continue;
      conns_[id].ch.fill();
      for (;;) {
        auto it = conns_.find(id);
        // A connection closed by a refusal: what else it sent is not read.
        if (it == conns_.end() || it->second.ch.fd() < 0) break;
        auto m = it->second.ch.next();
        if (!m) {
          crkit::log::warn("{}", m.error().message);
          it->second.ch.close();
          break;
        }
        if (!*m) break;
        // A message with a missing or mistyped field refuses that message, not the daemon.
        try {
          on_message(id, **m);
        } catch (const std::exception& e) {
          crkit::log::error("bad message from {}: {}: {}", it->second.ch.peer(), e.what(),
                            crkit::coord::loggable(**m));
          refuse(id, EPROTO, fmt::format("bad request: {}", e.what()));
        }
      }
      if (auto it = conns_.find(id); it != conns_.end() && !it->second.ch.open()) on_closed(id);
    }
    timers();
  }
}

}  // namespace

int main(int argc, char** argv) {
  crkit::log::set_program("cr_coordd");
  std::string listen = "*:0";
  bool priv = false;
  std::string token_file;
  bool token_stdin = false;
  int v = 0;
  static const struct option longs[] = {{"listen", required_argument, nullptr, 'l'},
                                        {"private", no_argument, nullptr, 'p'},
                                        {"token-file", required_argument, nullptr, 't'},
                                        {"token-stdin", no_argument, nullptr, 's'},
                                        {"verbose", no_argument, nullptr, 'v'},
                                        {"help", no_argument, nullptr, 'h'},
                                        {nullptr, 0, nullptr, 0}};
  for (int c; (c = ::getopt_long(argc, argv, "l:pvh", longs, nullptr)) != -1;) {
    switch (c) {
      case 'l':
        listen = optarg;
        break;
      case 'p':
        priv = true;
        break;
      case 't':
        token_file = optarg;
        break;
      case 's':
        token_stdin = true;
        break;
      case 'v':
        ++v;
        break;
      case 'h':
        std::printf(
            "usage: cr_coordd (--token-file FILE | --token-stdin) [--listen HOST:PORT]\n"
            "                 [--private] [-v]\n"
            "  The coordinator of checkpointable MPI jobs (cr_mpirun, cr_snapshot,\n"
            "  cr_mpirestart talk to it). --listen: address and port (default *:0, any free\n"
            "  port; the port is printed as 'cr_coordd: listening on PORT'). --private: end\n"
            "  when the last job has ended (cr_mpirun starts one like that).\n"
            "  Every connection must first present the token: --token-file FILE reads it from\n"
            "  FILE (mode 0600, yours; created with a new random token when missing; give the\n"
            "  same FILE to cr_mpirun --token-file), --token-stdin from the first line of\n"
            "  stdin (how cr_mpirun hands one to a private coordinator).\n");
        return 0;
      default:
        std::fprintf(stderr, "cr_coordd: bad option (see --help)\n");
        return 2;
    }
  }
  crkit::log::set_threshold(v >= 2   ? crkit::log::Level::Debug
                            : v == 1 ? crkit::log::Level::Verbose
                                     : crkit::log::Level::Normal);
  if (token_file.empty() == !token_stdin) {
    std::fprintf(stderr, "cr_coordd: give exactly one of --token-file FILE and --token-stdin\n");
    return 2;
  }
  auto token = token_stdin ? crkit::coord::read_token_line(0, 30000, "cr_coordd --token-stdin")
                           : crkit::coord::read_token_file(token_file, true);
  if (!token) {
    crkit::log::error("{}", token.error().message);
    return 2;
  }
  std::string host = "*";
  uint16_t port = 0;
  if (auto colon = listen.rfind(':'); colon != std::string::npos) {
    host = listen.substr(0, colon);
    port = static_cast<uint16_t>(std::atoi(listen.c_str() + colon + 1));
  } else {
    port = static_cast<uint16_t>(std::atoi(listen.c_str()));
  }
  auto fd = crkit::coord::listen_tcp(host == "*" ? "" : host, port);
  if (!fd) {
    crkit::log::error("{}", fd.error().message);
    return 1;
  }
  ::fcntl(fd->get(), F_SETFL, O_NONBLOCK);
  ::signal(SIGPIPE, SIG_IGN);
  std::printf("cr_coordd: listening on %u\n", crkit::coord::local_port(fd->get()));
  std::fflush(stdout);
  Coordinator c(std::move(*fd), priv, std::move(*token));
  return c.run();
}
