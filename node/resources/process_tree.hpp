// The process tree: which processes a request covers and in what order they are saved
// (dump), and who creates whom, who calls setsid() when and which process groups are set up
// at restart (restore). Both sides are pure functions of a process table or of the image's
// Process records, so they are unit-tested without processes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "image/schema.hpp"
#include "proc/proc.hpp"

namespace crkit::resources {

// BLCR's CR_SCOPE_* values.
enum class Scope : uint32_t { Proc = 1, Pgrp = 2, Sess = 3, Tree = 4 };
const char* scope_name(Scope s);

// ---- dump ------------------------------------------------------------------------------------

struct ScopeMembers {
  // Tree order: the root first (the ID of a -T/-p request; the leader of a group or session
  // if it is a member, else the eldest member without a parent in the scope), then its
  // descendants depth first; every parent comes before its children. Further roots (members
  // whose parent is not in the scope) follow with their subtrees, eldest first.
  std::vector<pid_t> pids;
  // Members that have exited but were not reaped by their parent yet: not saved.
  std::vector<proc::Stat> zombies;
};

// The members of a request, from a snapshot of the process table. `self` (the checkpointer)
// is never a member. ESRCH when ID names no live process (or an empty group/session).
Result<ScopeMembers> resolve_scope(std::span<const proc::Stat> table, Scope scope, pid_t id,
                                   pid_t self);

// ---- restore ---------------------------------------------------------------------------------

// Who creates each process of an image, and what it does about sessions and groups.
// Indices are positions in the image's process list (0 = the root).
struct TreePlan {
  enum class Group { Keep, Lead, Join };  // what the process does with setpgid() at restart
  struct Node {
    int parent = -1;      // parent's index, or -1 when the parent is not in the image
    bool setsid = false;  // calls setsid() (it was a session leader; --restore-sid)
    // Children this process creates (in image order): before its setsid() (those that
    // belong to the session it was born into), and after.
    std::vector<size_t> children_before_setsid, children_after_setsid;
    // Orphans this process creates through a short-lived helper child after its setsid(),
    // so that they belong to its session but end up as children of init.
    std::vector<size_t> adopted_orphans;
    Group group = Group::Keep;
    pid_t join_pgid = 0;  // Group::Join: the group to join
  };
  std::vector<Node> nodes;
  // Orphans created by the top-level helper (in cr_restart's session).
  std::vector<size_t> top_level_orphans;
  bool top_level_setsid = false;  // the top-level helper calls setsid() (TreeOptions.new_session)
  // What could not be restored exactly (sessions or groups whose leader is not in the image).
  std::vector<std::string> warnings;

  size_t helper_count() const;  // helpers the stand-ins will create (incl. the top-level one)
};

struct TreeOptions {
  bool restore_sid = false;
  bool restore_pgid = false;
  // The session and group cr_restart's own processes are in, as the restored tree will see
  // them; -1 when they are invisible (a new PID namespace).
  pid_t restarter_sid = -1;
  pid_t restarter_pgid = -1;
  // The root and the top-level orphans start a session of their own instead of joining
  // cr_restart's (root restarting another user's processes: no controlling terminal).
  bool new_session = false;
};

// EINVAL when the records do not form a forest rooted at the first process (duplicate pids,
// cycles, the root's parent inside the image).
Result<TreePlan> plan_tree(std::span<const image::ProcessRecord* const> procs,
                           const TreeOptions& opts);

}  // namespace crkit::resources
