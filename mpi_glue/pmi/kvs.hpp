// One job's key-value space as one node's PMI server sees it, with Hydra's PMI-1 visibility:
// a put is visible to the putting rank's own gets at once and to every other rank (on this
// node or another) only after the next barrier, when the fence has exchanged all nodes' puts.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace crkit::pmi {

using KeyValues = std::vector<std::pair<std::string, std::string>>;
using KvsMap = std::map<std::string, std::string, std::less<>>;

class Kvs {
 public:
  // job_attributes are visible to everyone from the start (Hydra serves PMI_process_mapping
  // this way).
  explicit Kvs(KvsMap job_attributes = {});

  void put(int rank, std::string key, std::string value);
  // What `rank` sees for key: its own unfenced put, else the fenced (job-wide) value.
  const std::string* get(int rank, std::string_view key) const;
  // The idx-th pair (key order) of what `rank` sees; nullopt past the end.
  std::optional<std::pair<std::string, std::string>> at_index(int rank, size_t idx) const;

  // This node's puts since the last fence, one entry per key (the last value put wins), and
  // forgets them: they are the node's contribution to the fence being started.
  KeyValues take_pending();
  // A failed fence hands its batch back so the next one carries it; keys put again meanwhile
  // keep their newer value.
  void restore_pending(const KeyValues& batch);
  // A fence completed: `job_puts` (every node's puts of that fence) become visible to all
  // ranks. Each rank's own view is folded in, since those puts are now job-wide.
  void apply_fence(const KeyValues& own_batch, const KvsMap& job_puts);

 private:
  KvsMap global_;
  std::map<int, KvsMap> own_;  // per rank, unfenced puts
  KvsMap pending_;             // this node's unfenced puts, all ranks
};

}  // namespace crkit::pmi
