// Mapping ranks to nodes: host lists (hostfile, --hosts), the launch plan, and the restart plan
// that puts the node images of a snapshot onto a new host list.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "snapshot/manifest.hpp"

namespace crkit::coord {

struct HostSlot {
  std::string host;
  int slots = 0;  // 0 = unspecified
};

// A hostfile, one host a line: MPICH style "host:N", Open MPI style "host slots=N" (Open MPI's
// "max_slots=N" is accepted and ignored), or a bare "host". '#' starts a comment; blank lines
// are skipped. A host listed more than once is merged into its first line, slots added (an
// unspecified count counts as 1 there: "a" twice is "a:2"). Host names are letters, digits,
// '.', '-' and '_'. Errors (EINVAL) read "NAME:LINE: why"; a file without hosts is an error.
Result<std::vector<HostSlot>> parse_hostfile(std::string_view text, const std::string& name);
// The value of "--hosts a,b:2,c": comma-separated "host" or "host:N", merged as above.
Result<std::vector<HostSlot>> parse_hosts_option(std::string_view csv);

struct NodePlan {
  std::string host;
  std::vector<int> ranks;
};

// Launch: nranks ranks over hosts, block mapping (consecutive ranks on a node), hosts in the
// order given. ppn > 0: ppn ranks per node, the last used node taking the remainder; slots are
// ignored (as mpiexec -ppn does); error when hosts * ppn < nranks. ppn == 0: each host is
// filled to its slots, a host without slots counting as 1; error when the slots total less
// than nranks. Hosts that get no rank are left out.
Result<std::vector<NodePlan>> plan_launch(int nranks, const std::vector<HostSlot>& hosts, int ppn);

// Restart: a node image is indivisible (its ranks share memory), so image i goes whole onto one
// new host whose slots (when specified) are at least its rank count; a host takes one image
// only. Hosts are taken in the order given: image i gets the first unused host that fits and
// still leaves a fitting host for every later image. The result is in image order (plan[i] is
// manifest.images[i] with its ranks). When the hosts are too few or too small the error says
// what the snapshot needs and what the host list offers.
Result<std::vector<NodePlan>> plan_restart(const Manifest& m, const std::vector<HostSlot>& hosts);

}  // namespace crkit::coord
