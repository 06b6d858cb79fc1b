// The node agent's PMI-1 server: it plays the part of Hydra's proxy for the MPI ranks the
// agent launches on its node. The ranks are started in PMI_PORT mode (PMI_PORT=host:port,
// PMI_ID=<global rank>, no PMI_FD) because a rank restarted from a checkpoint must reconnect
// to a new server, and an inherited PMI_FD socket could not follow it.
//
// A server is one job's view from one node. Its ranks may connect at any time and in any
// order; a restarted job simply gets a fresh server (fresh KVS) to which the restored ranks
// reconnect with their old PMI_ID.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "common/result.hpp"
#include "pmi/fence.hpp"
#include "pmi/kvs.hpp"

namespace crkit::pmi {

struct ServerConfig {
  // IPv4 address to listen on (MPICH's simple client connects over AF_INET only). The ranks
  // are local, so loopback is the default.
  std::string bind_address = "127.0.0.1";
  uint16_t port = 0;  // 0: an ephemeral port, see PmiServer::port()

  int job_size = 0;     // "cmd=set size=": ranks in the whole job
  std::string kvsname;  // "cmd=my_kvsname"; a restart server should reuse the job's old name
  int appnum = 0;
  int universe_size = 0;  // 0: job_size
  int debug = 0;          // "cmd=set debug=": the client's PMI_debug
  // The PMI_IDs (= global ranks) launched on this node. A barrier completes locally only
  // when each of them has entered it or has gone (finalized, aborted, disconnected); one
  // that has not connected yet holds the barrier.
  std::set<int> local_ranks;
  // Keys every rank can get from the start, e.g. "PMI_process_mapping" (see
  // process_mapping_block()) which MPICH reads to learn which ranks share a node.
  KvsMap job_attributes;
};

// How a rank's PMI connection ended.
struct RankExit {
  enum class Kind {
    Finalized,     // cmd=finalize; exit_code 0
    Aborted,       // cmd=abort exitcode=N [error_msg=...] (MPICH 4.0 sends no message)
    Disconnected,  // the connection closed or failed before finalize; message says how
  };
  int rank = -1;
  Kind kind = Kind::Disconnected;
  int exit_code = 0;
  std::string message;
};

struct ServerEvents {
  // Called on the server thread, at most once per rank per server; not for connections still
  // open when stop() closes them. It must not block and must not destroy the server; it may
  // call connected_ranks() and stop().
  std::function<void(const RankExit&)> on_rank_exit;
};

class PmiServer {
 public:
  // Listens, then serves on a thread of its own until stop(). Fails on an invalid config
  // or when the socket cannot be set up (the error says which address and why).
  static Result<std::unique_ptr<PmiServer>> start(ServerConfig config,
                                                  std::shared_ptr<FenceBackend> fence,
                                                  ServerEvents events = {});
  ~PmiServer();  // stop()
  PmiServer(const PmiServer&) = delete;
  PmiServer& operator=(const PmiServer&) = delete;

  uint16_t port() const;
  // The value for a rank's PMI_PORT: "host:port" (127.0.0.1 when bound to 0.0.0.0).
  std::string pmi_port() const;
  // Ranks whose connection has completed initack and is still open.
  std::set<int> connected_ranks() const;
  // Stops serving, closes every connection and the listening socket, and joins the thread.
  // Idempotent. Called from the server thread (an event callback) it only requests the stop;
  // the destructor then joins.
  void stop();

 private:
  struct Impl;
  explicit PmiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// PMI_process_mapping for `nodes` nodes holding `ranks_per_node` consecutive ranks each, in
// MPICH's "(vector,(first_node,node_count,ranks_per_node))" form (MPL_rankmap_str_to_array).
std::string process_mapping_block(int nodes, int ranks_per_node);

}  // namespace crkit::pmi
