// The job-wide half of a PMI barrier. A node's PmiServer completes barrier_in locally once
// every expected local rank arrived, then hands this node's puts to a FenceBackend; the
// backend exchanges them with the other nodes (the node agent forwards to the coordinator)
// and reports every node's puts back. Only then do the local ranks get barrier_out.
#pragma once

#include <functional>

#include "common/result.hpp"
#include "pmi/kvs.hpp"

namespace crkit::pmi {

class FenceBackend {
 public:
  // Called exactly once per fence with that fence's outcome: the puts of ALL nodes since the
  // previous fence (this node's included), or why the fence failed. May be called from any
  // thread, also synchronously from inside fence(), and also after the server has stopped
  // (it is then ignored).
  using Done = std::function<void(Result<KvsMap>)>;

  virtual ~FenceBackend() = default;

  // Called on the server's thread; must not block (the server keeps serving while the fence
  // runs). puts_since_last_fence holds one entry per key, the last value put on this node.
  virtual void fence(KeyValues puts_since_last_fence, Done done) = 0;
};

// A single-node job: the node's puts are the job's puts.
class LocalFenceBackend final : public FenceBackend {
 public:
  void fence(KeyValues puts_since_last_fence, Done done) override;
};

}  // namespace crkit::pmi
