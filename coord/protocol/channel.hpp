// The coordination protocol's transport: JSON messages, one per line, over a stream socket
// (TCP between nodes). Every component — cr_coordd, the node agents, cr_mpirun, cr_snapshot —
// speaks it; messages.md in this folder lists the messages.
//
// A Channel is non-blocking on the receive side (it is polled by an event loop) and sends
// whole messages (a message is small; the kernel buffer takes it, or the send waits briefly).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace crkit::coord {

using Json = nlohmann::json;

// host:port (host may be a name, an IPv4 address, or [IPv6]).
struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::string str() const;
};
Result<Endpoint> parse_endpoint(std::string_view s);

// A listening TCP socket on host (empty or "*": every address), port 0 = any free port.
Result<UniqueFd> listen_tcp(const std::string& host, uint16_t port);
uint16_t local_port(int fd);
// Connects, retrying refused connections until timeout_ms has passed (the peer may be
// starting up).
Result<UniqueFd> connect_tcp(const Endpoint& ep, int timeout_ms);

class Channel {
 public:
  Channel() = default;
  Channel(UniqueFd fd, std::string peer);
  int fd() const { return fd_.get(); }
  const std::string& peer() const { return peer_; }
  bool open() const { return fd_.valid() && !eof_; }

  Status send(const Json& msg);
  // Reads what the socket has (non-blocking); false at end of stream or on error.
  bool fill();
  // The next complete message received, if any. A line that is not JSON is an error.
  Result<std::optional<Json>> next();
  // Blocking receive of the next message, waiting up to timeout_ms (-1: no limit).
  Result<Json> recv(int timeout_ms);
  void close() { fd_.reset(); }

 private:
  UniqueFd fd_;
  std::string peer_;
  std::string in_;
  bool eof_ = false;
};

// A message as text for a log line: at most max characters, its token hidden.
std::string loggable(const Json& m, size_t max = 300);

// A request/response exchange for command-line clients: connect, send, return the reply
// (timeout_ms -1: wait as long as it takes, e.g. for a job to end).
Result<Json> call(const Endpoint& ep, const Json& request, int timeout_ms);

}  // namespace crkit::coord
