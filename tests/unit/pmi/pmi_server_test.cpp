// PmiServer over real TCP connections, with a test client speaking MPICH's PMI-1 wire format.
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "pmi/pmi_server.hpp"
#include "pmi_test_client.hpp"

namespace crkit::pmi {
namespace {

using testing::Reply;
using testing::TestClient;

// How long a test waits to be sure a reply does NOT come.
constexpr int kQuietMs = 200;

class ExitLog {
 public:
  ServerEvents events() {
    return ServerEvents{[this](const RankExit& e) {
      std::lock_guard<std::mutex> lock(mu_);
      exits_.push_back(e);
      cv_.notify_all();
    }};
  }
  // The exits seen once at least n have arrived (or after 5 s).
  std::vector<RankExit> wait_for(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(5), [&] { return exits_.size() >= n; });
    return exits_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<RankExit> exits_;
};

ServerConfig config(std::set<int> local, int size = 3) {
  ServerConfig c;
  c.job_size = size;
  c.kvsname = "kvs_test_0";
  c.appnum = 0;
  c.local_ranks = std::move(local);
  return c;
}

std::unique_ptr<PmiServer> start_server(ServerConfig c,
                                        std::shared_ptr<FenceBackend> fence = nullptr,
                                        ServerEvents events = {}) {
  if (!fence) fence = std::make_shared<LocalFenceBackend>();
  auto s = PmiServer::start(std::move(c), std::move(fence), std::move(events));
  EXPECT_TRUE(s) << s.error().message;
  return s ? std::move(*s) : nullptr;
}

std::string put(std::string_view key, std::string_view value) {
  return "cmd=put kvsname=kvs_test_0 key=" + std::string(key) + " value=" + std::string(value);
}
std::string get(std::string_view key) {
  return "cmd=get kvsname=kvs_test_0 key=" + std::string(key);
}

TEST(PmiServer, HandshakeDeliversSizeRankDebugAndJobInfo) {
  ServerConfig c = config({1, 2}, 4);
  c.appnum = 3;
  c.universe_size = 8;
  c.debug = 1;
  auto server = start_server(c);
  ASSERT_TRUE(server);
  EXPECT_NE(server->port(), 0);
  EXPECT_EQ(server->pmi_port(), "127.0.0.1:" + std::to_string(server->port()));

  TestClient cl(server->port());
  ASSERT_TRUE(cl.connected());
  cl.send("cmd=initack pmiid=2");
  EXPECT_EQ(cl.read_line(), "cmd=initack rc=0");
  EXPECT_EQ(cl.read_line(), "cmd=set size=4");
  EXPECT_EQ(cl.read_line(), "cmd=set rank=2");
  EXPECT_EQ(cl.read_line(), "cmd=set debug=1");
  cl.send("cmd=init pmi_version=1 pmi_subversion=1");
  EXPECT_EQ(cl.read_line(), "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0");
  cl.send("cmd=get_maxes");
  EXPECT_EQ(cl.read_line(), "cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024");
  cl.send("cmd=get_appnum");
  EXPECT_EQ(cl.read_line(), "cmd=appnum appnum=3");
  cl.send("cmd=get_universe_size");
  EXPECT_EQ(cl.read_line(), "cmd=universe_size size=8");
  cl.send("cmd=get_my_kvsname");
  EXPECT_EQ(cl.read_line(), "cmd=my_kvsname kvsname=kvs_test_0");
  EXPECT_EQ(server->connected_ranks(), std::set<int>{2});
}

TEST(PmiServer, UniverseSizeDefaultsToJobSize) {
  auto server = start_server(config({0}, 5));
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  EXPECT_EQ(cl.request("cmd=get_universe_size")["size"], "5");
}

TEST(PmiServer, RefusesAPmi2Init) {
  auto server = start_server(config({0}));
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  Reply r = cl.request("cmd=init pmi_version=2 pmi_subversion=0");
  EXPECT_EQ(r["cmd"], "response_to_init");
  EXPECT_EQ(r["rc"], "-1");
  EXPECT_EQ(r["pmi_version"], "1");
}

TEST(PmiServer, OwnPutIsVisibleBeforeTheBarrierOthersOnlyAfter) {
  auto server = start_server(config({0, 1}, 2));
  ASSERT_TRUE(server);
  TestClient r0(server->port()), r1(server->port());
  r0.handshake(0);
  r1.handshake(1);

  // A value with '=' in it survives, as the client's tokenizer allows.
  Reply p = r0.request(put("P0-businesscard", "description#h$port#7=x$"));
  EXPECT_EQ(p["cmd"], "put_result");
  EXPECT_EQ(p["rc"], "0");
  Reply own = r0.request(get("P0-businesscard"));
  EXPECT_EQ(own["cmd"], "get_result");
  EXPECT_EQ(own["rc"], "0");
  EXPECT_EQ(own["value"], "description#h$port#7=x$");
  Reply other = r1.request(get("P0-businesscard"));
  EXPECT_EQ(other["rc"], "-1");

  r0.send("cmd=barrier_in");
  r1.send("cmd=barrier_in");
  EXPECT_EQ(r0.read_reply()["cmd"], "barrier_out");
  EXPECT_EQ(r1.read_reply()["cmd"], "barrier_out");
  Reply after = r1.request(get("P0-businesscard"));
  EXPECT_EQ(after["rc"], "0");
  EXPECT_EQ(after["value"], "description#h$port#7=x$");
}

TEST(PmiServer, BarrierOutOnlyAfterTheThirdLocalRank) {
  auto server = start_server(config({0, 1, 2}));
  ASSERT_TRUE(server);
  TestClient r0(server->port()), r1(server->port()), r2(server->port());
  r0.handshake(0);
  r1.handshake(1);
  r2.handshake(2);
  r0.send("cmd=barrier_in");
  r1.send("cmd=barrier_in");
  EXPECT_FALSE(r0.read_line(kQuietMs));
  EXPECT_FALSE(r1.read_line(kQuietMs));
  r2.send("cmd=barrier_in");
  EXPECT_EQ(r0.read_line(), "cmd=barrier_out");
  EXPECT_EQ(r1.read_line(), "cmd=barrier_out");
  EXPECT_EQ(r2.read_line(), "cmd=barrier_out");

  // A second barrier works the same way.
  r2.send("cmd=barrier_in");
  r0.send("cmd=barrier_in");
  EXPECT_FALSE(r2.read_line(kQuietMs));
  r1.send("cmd=barrier_in");
  EXPECT_EQ(r0.read_line(), "cmd=barrier_out");
  EXPECT_EQ(r1.read_line(), "cmd=barrier_out");
  EXPECT_EQ(r2.read_line(), "cmd=barrier_out");
}

TEST(PmiServer, ARankNotYetConnectedHoldsTheBarrier) {
  auto server = start_server(config({0, 1}, 2));
  ASSERT_TRUE(server);
  TestClient r0(server->port());
  r0.handshake(0);
  r0.send("cmd=barrier_in");
  EXPECT_FALSE(r0.read_line(kQuietMs));
  TestClient r1(server->port());
  r1.handshake(1);
  r1.send("cmd=barrier_in");
  EXPECT_EQ(r0.read_line(), "cmd=barrier_out");
  EXPECT_EQ(r1.read_line(), "cmd=barrier_out");
}

TEST(PmiServer, GetOfAMissingKeyFails) {
  auto server = start_server(config({0}, 1));
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  cl.handshake(0);
  Reply r = cl.request(get("nope"));
  EXPECT_EQ(r["cmd"], "get_result");
  EXPECT_NE(r["rc"], "0");
  EXPECT_EQ(r["msg"], "key_nope_not_found");
}

TEST(PmiServer, JobAttributesAreVisibleWithoutABarrier) {
  ServerConfig c = config({0, 1}, 4);
  c.job_attributes["PMI_process_mapping"] = process_mapping_block(2, 2);
  auto server = start_server(c);
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  cl.handshake(1);
  Reply r = cl.request(get("PMI_process_mapping"));
  EXPECT_EQ(r["rc"], "0");
  EXPECT_EQ(r["value"], "(vector,(0,2,2))");
}

TEST(PmiServer, GetByIdxIteratesTheVisiblePairs) {
  ServerConfig c = config({0}, 1);
  c.job_attributes["attr"] = "a";
  auto server = start_server(c);
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  cl.handshake(0);
  EXPECT_EQ(cl.request(put("k1", "v1"))["rc"], "0");
  EXPECT_EQ(cl.request(put("k2", "v=2"))["rc"], "0");
  cl.send("cmd=barrier_in");
  EXPECT_EQ(cl.read_reply()["cmd"], "barrier_out");

  std::map<std::string, std::string> seen;
  int idx = 0;
  for (int guard = 0; guard < 10; ++guard) {
    Reply r = cl.request("cmd=getbyidx kvsname=kvs_test_0 idx=" + std::to_string(idx));
    EXPECT_EQ(r["cmd"], "getbyidx_results");
    if (r["rc"] != "0") {
      EXPECT_EQ(r["reason"], "no_more_keyvals");
      break;
    }
    seen[r["key"]] = r["val"];
    idx = std::stoi(r["nextidx"]);
  }
  std::map<std::string, std::string> want{{"attr", "a"}, {"k1", "v1"}, {"k2", "v=2"}};
  EXPECT_EQ(seen, want);
}

TEST(PmiServer, FinalizeIsAcknowledgedReportedAndClosed) {
  ExitLog exits;
  auto server = start_server(config({0, 1}, 2), nullptr, exits.events());
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  cl.handshake(1);
  EXPECT_EQ(server->connected_ranks(), std::set<int>{1});
  EXPECT_EQ(cl.request("cmd=finalize")["cmd"], "finalize_ack");
  EXPECT_TRUE(cl.wait_closed());
  auto seen = exits.wait_for(1);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].rank, 1);
  EXPECT_EQ(seen[0].kind, RankExit::Kind::Finalized);
  EXPECT_EQ(seen[0].exit_code, 0);
  EXPECT_TRUE(server->connected_ranks().empty());
}

TEST(PmiServer, AbortIsReportedWithItsExitCode) {
  ExitLog exits;
  auto server = start_server(config({0}, 1), nullptr, exits.events());
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  cl.handshake(0);
  cl.send("cmd=abort exitcode=13");  // MPICH 4.0.2's PMI_Abort line
  EXPECT_TRUE(cl.wait_closed());
  auto seen = exits.wait_for(1);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].kind, RankExit::Kind::Aborted);
  EXPECT_EQ(seen[0].exit_code, 13);
}

TEST(PmiServer, AbortKeepsAFreeTextMessage) {
  ExitLog exits;
  auto server = start_server(config({0}, 1), nullptr, exits.events());
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  cl.handshake(0);
  cl.send("cmd=abort exitcode=2 error_msg=out of memory in solver");
  auto seen = exits.wait_for(1);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].message, "out of memory in solver");
}

// Two nodes' servers fencing through one backend, as the coordinator would: the fence
// completes when both nodes arrived, from the thread of the later one.
class SharedFence final : public FenceBackend {
 public:
  explicit SharedFence(size_t nodes) : nodes_(nodes) {}
  void fence(KeyValues puts, Done done) override {
    std::vector<Done> ready;
    KvsMap all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [k, v] : puts) merged_.insert_or_assign(k, v);
      waiting_.push_back(std::move(done));
      if (waiting_.size() < nodes_) return;
      ready.swap(waiting_);
      all.swap(merged_);
    }
    for (auto& d : ready) d(all);
  }

 private:
  size_t nodes_;
  std::mutex mu_;
  std::vector<Done> waiting_;
  KvsMap merged_;
};

TEST(PmiServer, TwoNodesExchangePutsThroughTheFence) {
  auto fence = std::make_shared<SharedFence>(2);
  auto node_a = start_server(config({0}, 2), fence);
  auto node_b = start_server(config({1}, 2), fence);
  ASSERT_TRUE(node_a && node_b);
  TestClient r0(node_a->port()), r1(node_b->port());
  r0.handshake(0);
  r1.handshake(1);
  EXPECT_EQ(r0.request(put("P0-businesscard", "on-a"))["rc"], "0");
  EXPECT_EQ(r1.request(put("P1-businesscard", "on-b"))["rc"], "0");
  EXPECT_EQ(r1.request(get("P0-businesscard"))["rc"], "-1");

  r0.send("cmd=barrier_in");
  EXPECT_FALSE(r0.read_line(kQuietMs));  // node B has not arrived yet
  r1.send("cmd=barrier_in");
  EXPECT_EQ(r0.read_line(), "cmd=barrier_out");
  EXPECT_EQ(r1.read_line(), "cmd=barrier_out");

  EXPECT_EQ(r1.request(get("P0-businesscard"))["value"], "on-a");
  EXPECT_EQ(r0.request(get("P1-businesscard"))["value"], "on-b");
}

class FailingFence final : public FenceBackend {
 public:
  void fence(KeyValues, Done done) override {
    done(Error{EHOSTUNREACH, "coordinator unreachable"});
  }
};

TEST(PmiServer, AFailedFenceFailsTheBarrierInsteadOfReleasingIt) {
  auto server = start_server(config({0}, 1), std::make_shared<FailingFence>());
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  cl.handshake(0);
  Reply r = cl.request("cmd=barrier_in");
  // MPICH's PMI_Barrier ignores rc, so only a reply other than barrier_out makes it fail.
  EXPECT_EQ(r["cmd"], "error");
  EXPECT_EQ(r["rc"], "-1");
  EXPECT_NE(r["msg"].find("coordinator_unreachable"), std::string::npos) << r["msg"];
}

// Keeps the Done callback so a test can complete the fence after the server is gone.
class HeldFence final : public FenceBackend {
 public:
  void fence(KeyValues, Done done) override {
    std::lock_guard<std::mutex> lock(mu);
    held = std::move(done);
  }
  std::mutex mu;
  Done held;
};

TEST(PmiServer, AFenceCompletingAfterStopIsIgnored) {
  auto fence = std::make_shared<HeldFence>();
  auto server = start_server(config({0}, 1), fence);
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  cl.handshake(0);
  cl.send("cmd=barrier_in");
  for (int i = 0; i < 500; ++i) {
    std::lock_guard<std::mutex> lock(fence->mu);
    if (fence->held) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  server.reset();
  EXPECT_TRUE(cl.wait_closed());
  std::lock_guard<std::mutex> lock(fence->mu);
  ASSERT_TRUE(fence->held);
  fence->held(KvsMap{});  // must not touch the destroyed server
}

TEST(PmiServer, UnknownCommandGetsAnErrorLineAndTheConnectionLivesOn) {
  auto server = start_server(config({0}, 1));
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  cl.handshake(0);
  Reply r = cl.request("cmd=frobnicate x=1");
  EXPECT_EQ(r["cmd"], "error");
  EXPECT_EQ(r["rc"], "-1");
  EXPECT_EQ(r["msg"], "unknown_command_frobnicate");
  Reply bad = cl.request("this is not pmi");
  EXPECT_EQ(bad["cmd"], "error");
  EXPECT_EQ(cl.request("cmd=get_appnum")["cmd"], "appnum");
}

TEST(PmiServer, SpawnIsRefusedNotLeftHanging) {
  auto server = start_server(config({0}, 1));
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  cl.handshake(0);
  // PMI_Spawn_multiple's block for one command, sent in one write as the client does.
  cl.send(
      "mcmd=spawn\nnprocs=2\nexecname=/bin/true\ntotspawns=1\nspawnssofar=1\nargcnt=0\n"
      "preput_num=0\ninfo_num=0\nendcmd");
  Reply r = cl.read_reply();
  EXPECT_EQ(r["cmd"], "spawn_result");
  EXPECT_EQ(r["rc"], "-1");
  EXPECT_EQ(cl.request("cmd=get_appnum")["cmd"], "appnum");
}

TEST(PmiServer, KvsCommandsNeedInitackAndTheRightKvsname) {
  auto server = start_server(config({0}, 1));
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  Reply early = cl.request(put("k", "v"));
  EXPECT_EQ(early["cmd"], "put_result");
  EXPECT_EQ(early["rc"], "-1");
  cl.handshake(0);
  Reply wrong = cl.request("cmd=put kvsname=other key=k value=v");
  EXPECT_EQ(wrong["rc"], "-1");
  EXPECT_NE(wrong["msg"].find("unknown_kvsname"), std::string::npos) << wrong["msg"];
  Reply long_key = cl.request(put(std::string(64, 'k'), "v"));
  EXPECT_EQ(long_key["rc"], "-1");
}

TEST(PmiServer, UnknownAndDuplicatePmiidsAreRefused) {
  auto server = start_server(config({0, 1}, 4));
  ASSERT_TRUE(server);
  TestClient stranger(server->port());
  stranger.send("cmd=initack pmiid=3");
  Reply r = stranger.read_reply();
  EXPECT_EQ(r["cmd"], "error");
  EXPECT_NE(r["msg"].find("not_a_rank_of_this_node"), std::string::npos) << r["msg"];
  EXPECT_TRUE(stranger.wait_closed());

  TestClient first(server->port());
  first.handshake(0);
  TestClient twin(server->port());
  twin.send("cmd=initack pmiid=0");
  Reply dup = twin.read_reply();
  EXPECT_EQ(dup["cmd"], "error");
  EXPECT_NE(dup["msg"].find("already_connected"), std::string::npos) << dup["msg"];
  EXPECT_TRUE(twin.wait_closed());
  // The first connection of rank 0 is unharmed.
  EXPECT_EQ(first.request("cmd=get_my_kvsname")["kvsname"], "kvs_test_0");
  EXPECT_EQ(server->connected_ranks(), std::set<int>{0});
}

TEST(PmiServer, DisconnectMidBarrierIsReportedAndReleasesTheOthers) {
  ExitLog exits;
  auto server = start_server(config({0, 1, 2}), nullptr, exits.events());
  ASSERT_TRUE(server);
  TestClient r0(server->port()), r2(server->port());
  auto r1 = std::make_unique<TestClient>(server->port());
  r0.handshake(0);
  r1->handshake(1);
  r2.handshake(2);
  r0.send("cmd=barrier_in");
  r1->send("cmd=barrier_in");
  EXPECT_FALSE(r0.read_line(kQuietMs));
  r1.reset();  // rank 1 dies inside the barrier

  auto seen = exits.wait_for(1);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].rank, 1);
  EXPECT_EQ(seen[0].kind, RankExit::Kind::Disconnected);
  EXPECT_NE(seen[0].message.find("before finalize"), std::string::npos) << seen[0].message;

  r2.send("cmd=barrier_in");
  EXPECT_EQ(r0.read_line(), "cmd=barrier_out");
  EXPECT_EQ(r2.read_line(), "cmd=barrier_out");
  EXPECT_EQ(server->connected_ranks(), (std::set<int>{0, 2}));

  // Its PMI_ID is spent on this server: a restarted rank gets a new server.
  TestClient again(server->port());
  again.send("cmd=initack pmiid=1");
  EXPECT_EQ(again.read_reply()["cmd"], "error");
}

TEST(PmiServer, ARestartServerStartsWithAFreshKvs) {
  auto before = start_server(config({0}, 1));
  ASSERT_TRUE(before);
  {
    TestClient cl(before->port());
    cl.handshake(0);
    EXPECT_EQ(cl.request(put("P0-businesscard", "old"))["rc"], "0");
    EXPECT_EQ(cl.request("cmd=barrier_in")["cmd"], "barrier_out");
  }
  before.reset();

  // The restored rank reconnects to a new PMI_PORT with its old PMI_ID.
  auto after = start_server(config({0}, 1));
  ASSERT_TRUE(after);
  TestClient cl(after->port());
  EXPECT_EQ(cl.handshake(0)["rank"], "0");
  EXPECT_EQ(cl.request(get("P0-businesscard"))["rc"], "-1");
  EXPECT_EQ(cl.request(put("P0-businesscard", "new"))["rc"], "0");
  EXPECT_EQ(cl.request("cmd=barrier_in")["cmd"], "barrier_out");
  EXPECT_EQ(cl.request(get("P0-businesscard"))["value"], "new");
}

TEST(PmiServer, StartRejectsBadConfigsWithAReason) {
  auto fence = std::make_shared<LocalFenceBackend>();
  ServerConfig outside = config({0, 3}, 3);
  auto r = PmiServer::start(outside, fence);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("local rank 3"), std::string::npos) << r.error().message;

  ServerConfig blank = config({0}, 1);
  blank.kvsname = "has space";
  EXPECT_FALSE(PmiServer::start(blank, fence));

  ServerConfig addr = config({0}, 1);
  addr.bind_address = "localhost";
  auto a = PmiServer::start(addr, fence);
  ASSERT_FALSE(a);
  EXPECT_NE(a.error().message.find("not an IPv4 address"), std::string::npos);
}

TEST(PmiServer, BindFailureNamesTheAddressAndErrno) {
  auto first = start_server(config({0}, 1));
  ASSERT_TRUE(first);
  ServerConfig same = config({0}, 1);
  same.port = first->port();
  auto r = PmiServer::start(same, std::make_shared<LocalFenceBackend>());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EADDRINUSE);
  EXPECT_NE(r.error().message.find("127.0.0.1:" + std::to_string(first->port())), std::string::npos)
      << r.error().message;
}

TEST(PmiServer, StopFromAnEventCallbackDoesNotDeadlock) {
  std::unique_ptr<PmiServer> server;
  std::mutex mu;
  ServerEvents ev{[&](const RankExit&) {
    std::lock_guard<std::mutex> lock(mu);
    server->stop();
  }};
  {
    std::lock_guard<std::mutex> lock(mu);
    server = start_server(config({0}, 1), nullptr, ev);
  }
  ASSERT_TRUE(server);
  TestClient cl(server->port());
  cl.handshake(0);
  cl.send("cmd=finalize");
  EXPECT_TRUE(cl.wait_closed());
  server->stop();  // joins the loop that the callback asked to end
}

size_t open_fd_count() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

TEST(PmiServer, StopClosesTheListenerEveryConnectionAndTheEventfd) {
  size_t before = open_fd_count();
  {
    auto server = start_server(config({0, 1}, 2));
    ASSERT_TRUE(server);
    TestClient a(server->port()), b(server->port());
    a.handshake(0);
    b.send("cmd=get_appnum");  // an unidentified connection too
    EXPECT_EQ(b.read_reply()["cmd"], "appnum");
    server->stop();
    EXPECT_TRUE(a.wait_closed());
    EXPECT_TRUE(b.wait_closed());
    server->stop();  // idempotent
  }
  EXPECT_EQ(open_fd_count(), before);
}

}  // namespace
}  // namespace crkit::pmi
