// The shared secret of a coordinator and the tools and agents of its jobs. The coordinator
// listens on every address, so anyone who can reach its port could otherwise end a job, take
// snapshots of it or read its environment by posing as an agent: the first message of every
// connection must carry {"token": ...}. A private coordinator gets a fresh token from the
// cr_mpirun that starts it (on its stdin); the agents get it the same way, through the
// launcher (ssh forwards stdin; it never appears on a command line), and cr_snapshot reads it
// from the job's registry record (mode 0600).
#pragma once

#include <string>
#include <string_view>

#include "common/result.hpp"

namespace crkit::coord {

// 64 hex digits from getrandom().
Result<std::string> new_token();

// Compares in time independent of where the two differ.
bool token_equal(std::string_view a, std::string_view b);

// A token is 16..256 printable characters without spaces; EINVAL names what is wrong.
Status check_token(std::string_view t, std::string_view source);

// FILE's first line. The file must be a regular file of the caller's that nobody else can
// read (EACCES otherwise, naming it). With create, a missing file is made (mode 0600, O_EXCL)
// holding a new token.
Result<std::string> read_token_file(const std::string& path, bool create);

// The token a client holds for a coordinator it names itself (HOST:PORT): token_file's when
// one is given, else $CRKIT_COORD_TOKEN's (taken out of the environment, so that what the
// client starts does not inherit it). EINVAL naming both ways when there is neither.
Result<std::string> client_token(const std::string& token_file, const std::string& coord);

// The first line of fd (a pipe: cr_mpirun writes the token and closes it), within timeout_ms.
Result<std::string> read_token_line(int fd, int timeout_ms, std::string_view source);

}  // namespace crkit::coord
