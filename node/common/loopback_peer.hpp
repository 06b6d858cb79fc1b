// Who is on the other end of a loopback TCP connection. The node agent's PMI and stdio ports
// listen on 127.0.0.1, which every local user can reach; TCP has no SO_PEERCRED, but the
// kernel's socket table (/proc/net/tcp, this network namespace's) names the owner of the
// connecting socket, so a connection from another user can be refused.
#pragma once

#include <sys/types.h>

#include "common/result.hpp"

namespace crkit {

// The uid owning the peer socket of the accepted IPv4 connection fd. ENOENT when the peer is
// not in this namespace's table (not a local connection), or no longer an open socket (its
// owner closed it: then the table no longer says whose it was).
Result<uid_t> loopback_peer_uid(int fd);

// Whether the peer may talk to us: it is our effective user, or root.
Status check_loopback_peer(int fd, const char* what);

}  // namespace crkit
