#include "resources/process_tree.hpp"

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

namespace crkit::resources {

const char* scope_name(Scope s) {
  switch (s) {
    case Scope::Proc:
      return "process";
    case Scope::Pgrp:
      return "process group";
    case Scope::Sess:
      return "session";
    case Scope::Tree:
      return "process tree";
  }
  return "unknown";
}

namespace {

bool elder(const proc::Stat* a, const proc::Stat* b) {
  return a->start_time != b->start_time ? a->start_time < b->start_time : a->pid < b->pid;
}

}  // namespace

Result<ScopeMembers> resolve_scope(std::span<const proc::Stat> table, Scope scope, pid_t id,
                                   pid_t self) {
  if (id <= 0) return fail(ESRCH, fmt::format("invalid process id {}", id));
  std::map<pid_t, const proc::Stat*> by_pid;
  std::map<pid_t, std::vector<const proc::Stat*>> children;  // by ppid, eldest first
  for (const auto& st : table) {
    by_pid[st.pid] = &st;
    children[st.ppid].push_back(&st);
  }
  for (auto& [ppid, kids] : children) std::sort(kids.begin(), kids.end(), elder);

  ScopeMembers out;
  std::set<pid_t> members;
  switch (scope) {
    case Scope::Proc:
    case Scope::Tree: {
      auto it = by_pid.find(id);
      if (it == by_pid.end()) return fail(ESRCH, fmt::format("process {} does not exist", id));
      if (proc::is_zombie(*it->second))
        return fail(ESRCH, fmt::format("process {} is a zombie (it has exited; its parent has not "
                                       "reaped it yet)",
                                       id));
      if (id == self) return fail(ESRCH, fmt::format("process {} is cr_checkpoint itself", id));
      members.insert(id);
      if (scope == Scope::Proc) break;
      std::vector<pid_t> todo{id};
      while (!todo.empty()) {
        pid_t p = todo.back();
        todo.pop_back();
        for (const proc::Stat* c : children[p]) {
          if (c->pid == self) continue;
          if (proc::is_zombie(*c)) {
            out.zombies.push_back(*c);
            continue;
          }
          if (members.insert(c->pid).second) todo.push_back(c->pid);
        }
      }
      break;
    }
    case Scope::Pgrp:
    case Scope::Sess: {
      for (const auto& st : table) {
        if ((scope == Scope::Pgrp ? st.pgrp : st.session) != id || st.pid == self) continue;
        if (proc::is_zombie(st))
          out.zombies.push_back(st);
        else
          members.insert(st.pid);
      }
      if (members.empty())
        return fail(ESRCH, fmt::format("{} {} has no processes{}", scope_name(scope), id,
                                       out.zombies.empty() ? "" : " (only zombies)"));
      break;
    }
  }

  // Roots: members whose parent is not a member. The named process (or the leader) first.
  std::vector<const proc::Stat*> roots;
  for (pid_t p : members) {
    const proc::Stat* st = by_pid[p];
    if (!members.count(st->ppid) || st->ppid == p) roots.push_back(st);
  }
  std::sort(roots.begin(), roots.end(), elder);
  auto named =
      std::find_if(roots.begin(), roots.end(), [&](const proc::Stat* s) { return s->pid == id; });
  if (named != roots.end()) std::rotate(roots.begin(), named, named + 1);
  for (const proc::Stat* r : roots) {
    // Depth first, children eldest first.
    std::vector<const proc::Stat*> todo{r};
    while (!todo.empty()) {
      const proc::Stat* p = todo.back();
      todo.pop_back();
      out.pids.push_back(p->pid);
      const auto& kids = children[p->pid];
      for (auto k = kids.rbegin(); k != kids.rend(); ++k)
        if (members.count((*k)->pid) && (*k)->pid != p->pid) todo.push_back(*k);
    }
  }
  return out;
}

size_t TreePlan::helper_count() const {
  size_t n = top_level_orphans.empty() ? 0 : 1;
  for (const auto& node : nodes) n += node.adopted_orphans.empty() ? 0 : 1;
  return n;
}

Result<TreePlan> plan_tree(std::span<const image::ProcessRecord* const> procs,
                           const TreeOptions& opts) {
  TreePlan plan;
  const size_t n = procs.size();
  if (n == 0) return fail(EINVAL, "the image holds no process");
  plan.nodes.resize(n);
  std::map<pid_t, size_t> index;
  for (size_t i = 0; i < n; ++i)
    if (!index.emplace(procs[i]->pid, i).second)
      return fail(EINVAL, fmt::format("the image holds process {} twice", procs[i]->pid));
  auto find = [&](pid_t pid) -> int {
    auto it = index.find(pid);
    return it == index.end() ? -1 : static_cast<int>(it->second);
  };
  for (size_t i = 0; i < n; ++i) {
    int p = find(procs[i]->ppid);
    plan.nodes[i].parent = p == static_cast<int>(i) ? -1 : p;
  }
  if (plan.nodes[0].parent >= 0)
    return fail(EINVAL, fmt::format("the image's first process {} has its parent {} in the image "
                                    "(the processes are not in tree order)",
                                    procs[0]->pid, procs[0]->ppid));

  std::set<std::string> warned;
  auto warn = [&](std::string msg) {
    if (warned.insert(msg).second) plan.warnings.push_back(std::move(msg));
  };

  // Sessions. born: the session a process has when created; final: after its own setsid().
  // cr_restart's session is opts.restarter_sid (-1 if invisible).
  std::vector<pid_t> born(n, opts.restarter_sid), final_sid(n, opts.restarter_sid);
  for (size_t i = 0; i < n; ++i)
    plan.nodes[i].setsid = opts.restore_sid && procs[i]->sid == procs[i]->pid;
  if (opts.new_session) {
    plan.nodes[0].setsid = true;
    plan.top_level_setsid = true;
  }
  auto session_lost = [&](size_t i) {
    if (find(procs[i]->sid) < 0)
      warn(
          fmt::format("the session {} cannot be restored (its leader is not in the image); its "
                      "processes stay in the session of the process that creates them",
                      procs[i]->sid));
    else
      warn(
          fmt::format("the session {} of process {} cannot be restored (its parent is in "
                      "another session at restart); it stays in its parent's session",
                      procs[i]->sid, procs[i]->pid));
  };

  // Creation order: the root, then every orphan, each followed by the processes it creates.
  std::vector<size_t> order;
  std::vector<bool> placed(n, false);
  auto place_subtree = [&](size_t top) {
    std::vector<size_t> todo{top};
    while (!todo.empty()) {
      size_t q = todo.back();
      todo.pop_back();
      if (placed[q]) continue;
      placed[q] = true;
      order.push_back(q);
      final_sid[q] = plan.nodes[q].setsid ? procs[q]->pid : born[q];
      std::vector<size_t> kids;
      for (size_t c = 0; c < n; ++c)
        if (plan.nodes[c].parent == static_cast<int>(q)) kids.push_back(c);
      for (size_t c : kids) {
        bool before = false;
        if (opts.restore_sid && !plan.nodes[c].setsid && procs[c]->sid != final_sid[q]) {
          if (plan.nodes[q].setsid && procs[c]->sid == born[q])
            before = true;
          else
            session_lost(c);
        }
        born[c] = before ? born[q] : final_sid[q];
        (before ? plan.nodes[q].children_before_setsid : plan.nodes[q].children_after_setsid)
            .push_back(c);
      }
      for (auto c = kids.rbegin(); c != kids.rend(); ++c) todo.push_back(*c);
    }
  };
  if (opts.restore_sid && procs[0]->sid != procs[0]->pid && procs[0]->sid != opts.restarter_sid)
    session_lost(0);
  place_subtree(0);
  for (size_t i = 1; i < n; ++i) {
    if (plan.nodes[i].parent >= 0) continue;
    int leader = opts.restore_sid ? find(procs[i]->sid) : -1;
    if (!plan.nodes[i].setsid && leader >= 0 && plan.nodes[leader].setsid) {
      plan.nodes[leader].adopted_orphans.push_back(i);
      born[i] = procs[leader]->pid;
    } else {
      plan.top_level_orphans.push_back(i);
      if (opts.new_session) born[i] = -1;  // the helper's own session
      if (opts.restore_sid && !plan.nodes[i].setsid && procs[i]->sid != opts.restarter_sid)
        session_lost(i);
    }
    place_subtree(i);
  }
  if (order.size() != n) {
    std::string stray;
    for (size_t i = 0; i < n; ++i)
      if (!placed[i]) stray += fmt::format(" {}", procs[i]->pid);
    return fail(EINVAL, fmt::format("the image's processes{} do not descend from a process "
                                    "without a parent in the image (cycle in the parent links)",
                                    stray));
  }

  // Process groups: leaders create their group, the others join it once it exists.
  if (opts.restore_pgid) {
    for (size_t i = 0; i < n; ++i) {
      auto& node = plan.nodes[i];
      const pid_t g = procs[i]->pgid, pid = procs[i]->pid;
      if (node.setsid) continue;  // a session leader leads its group already
      if (g == pid) {
        node.group = TreePlan::Group::Lead;
        continue;
      }
      int leader = find(g);
      bool leader_leads = leader >= 0 && procs[leader]->pgid == g;
      if (leader_leads && final_sid[leader] == final_sid[i]) {
        node.group = TreePlan::Group::Join;
        node.join_pgid = g;
      } else if (leader < 0 && g == opts.restarter_pgid && final_sid[i] == opts.restarter_sid) {
        node.group = TreePlan::Group::Join;  // cr_restart's own group
        node.join_pgid = g;
      } else {
        warn(
            fmt::format("the process group {} cannot be restored ({}); its processes stay in "
                        "the group of the process that creates them",
                        g,
                        leader < 0      ? "no process of the image has that pid"
                        : !leader_leads ? "its leader had left it"
                                        : "its leader is in another session"));
      }
    }
  }
  return plan;
}

}  // namespace crkit::resources
