// Unit tests for resources/process_tree: which processes a request covers, in which order,
// and how a restart recreates parents, sessions and process groups.
#include "resources/process_tree.hpp"

#include <gtest/gtest.h>

namespace crkit::resources {
namespace {

proc::Stat stat_of(pid_t pid, pid_t ppid, pid_t pgrp, pid_t sid, uint64_t start, char state = 'S') {
  proc::Stat s;
  s.pid = pid;
  s.ppid = ppid;
  s.pgrp = pgrp;
  s.session = sid;
  s.start_time = start;
  s.state = state;
  s.comm = "p" + std::to_string(pid);
  return s;
}

// A shell session: init 1; sshd 100 -> bash 200 (session 200) -> job 300 (group 300) with
// children 301 (older) and 302; 302 has a child 303; 304 is a zombie child of 300; 400 is an
// orphan of session 200 (its parent died; now a child of init) in group 300; 500 is
// cr_checkpoint itself, a child of bash.
std::vector<proc::Stat> table() {
  return {
      stat_of(1, 0, 1, 1, 1),          stat_of(100, 1, 100, 100, 5),
      stat_of(200, 100, 200, 200, 10), stat_of(300, 200, 300, 200, 20),
      stat_of(302, 300, 300, 200, 31), stat_of(301, 300, 300, 200, 30),
      stat_of(303, 302, 300, 200, 40), stat_of(304, 300, 300, 200, 41, 'Z'),
      stat_of(400, 1, 300, 200, 25),   stat_of(500, 200, 500, 200, 90),
  };
}

TEST(ResolveScope, TreeIsDepthFirstEldestChildFirstWithoutZombies) {
  auto t = table();
  auto r = resolve_scope(t, Scope::Tree, 300, 500);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->pids, (std::vector<pid_t>{300, 301, 302, 303}));
  ASSERT_EQ(r->zombies.size(), 1u);
  EXPECT_EQ(r->zombies[0].pid, 304);
}

TEST(ResolveScope, AZombieMainThreadWithLiveThreadsIsAMember) {
  auto t = table();
  for (auto& st : t)
    if (st.pid == 304) st.num_threads = 2;  // its main thread exited, another one runs
  auto r = resolve_scope(t, Scope::Tree, 300, 500);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->pids, (std::vector<pid_t>{300, 301, 302, 303, 304}));
  EXPECT_TRUE(r->zombies.empty());
}

TEST(ResolveScope, ProcIsTheProcessAlone) {
  auto t = table();
  auto r = resolve_scope(t, Scope::Proc, 302, 500);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->pids, (std::vector<pid_t>{302}));
  EXPECT_TRUE(r->zombies.empty());
}

TEST(ResolveScope, TreeLeavesOutTheCheckpointerItself) {
  auto t = table();
  auto r = resolve_scope(t, Scope::Tree, 200, 500);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->pids, (std::vector<pid_t>{200, 300, 301, 302, 303}));
  auto self = resolve_scope(t, Scope::Proc, 500, 500);
  ASSERT_FALSE(self.ok());
  EXPECT_EQ(self.error().code, ESRCH);
}

TEST(ResolveScope, GroupHasTheLeaderFirstThenOtherRootsEldestFirst) {
  auto t = table();
  auto r = resolve_scope(t, Scope::Pgrp, 300, 500);
  ASSERT_TRUE(r.ok());
  // 400 (an orphan in the group) is a second root.
  EXPECT_EQ(r->pids, (std::vector<pid_t>{300, 301, 302, 303, 400}));
  ASSERT_EQ(r->zombies.size(), 1u);
}

TEST(ResolveScope, GroupWithoutItsLeaderStartsWithTheEldestMember) {
  std::vector<proc::Stat> t = {stat_of(10, 1, 7, 7, 5), stat_of(11, 1, 7, 7, 3),
                               stat_of(12, 10, 7, 7, 9)};
  auto r = resolve_scope(t, Scope::Pgrp, 7, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->pids, (std::vector<pid_t>{11, 10, 12}));
}

TEST(ResolveScope, SessionIncludesOrphansAndNotOtherSessions) {
  auto t = table();
  auto r = resolve_scope(t, Scope::Sess, 200, 500);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->pids, (std::vector<pid_t>{200, 300, 301, 302, 303, 400}));
}

TEST(ResolveScope, MissingOrZombieOrEmptyIsEsrch) {
  auto t = table();
  for (auto [scope, id] :
       {std::pair{Scope::Tree, 999}, std::pair{Scope::Tree, 304}, std::pair{Scope::Pgrp, 999},
        std::pair{Scope::Sess, 999}, std::pair{Scope::Tree, 0}}) {
    auto r = resolve_scope(t, scope, id, 500);
    ASSERT_FALSE(r.ok()) << scope_name(scope) << " " << id;
    EXPECT_EQ(r.error().code, ESRCH);
  }
  auto z = resolve_scope(t, Scope::Tree, 304, 500);
  EXPECT_NE(z.error().message.find("zombie"), std::string::npos) << z.error().message;
}

// ---- plan_tree -------------------------------------------------------------------------------

image::ProcessRecord rec(pid_t pid, pid_t ppid, pid_t pgid, pid_t sid) {
  image::ProcessRecord p;
  p.pid = pid;
  p.ppid = ppid;
  p.pgid = pgid;
  p.sid = sid;
  return p;
}

Result<TreePlan> plan(const std::vector<image::ProcessRecord>& ps, TreeOptions o) {
  std::vector<const image::ProcessRecord*> ptrs;
  for (const auto& p : ps) ptrs.push_back(&p);
  return plan_tree(ptrs, o);
}

// The session of the example "sessions": leader 10 with groups 20 (20, 21) and 30 (30, 31),
// 40 in the leader's group, and 50 an orphan (parent gone) in the leader's session and group.
std::vector<image::ProcessRecord> session_image() {
  return {rec(10, 1, 10, 10),  rec(20, 10, 20, 10), rec(21, 20, 20, 10), rec(30, 10, 30, 10),
          rec(31, 30, 30, 10), rec(40, 10, 10, 10), rec(50, 1, 10, 10)};
}

TEST(PlanTree, DefaultKeepsEverythingInTheRestartersSessionAndGroup) {
  auto r = plan(session_image(), {});
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto& n = r->nodes;
  EXPECT_EQ(n[0].parent, -1);
  EXPECT_EQ(n[2].parent, 1);
  for (const auto& node : n) {
    EXPECT_FALSE(node.setsid);
    EXPECT_TRUE(node.children_before_setsid.empty());
    EXPECT_EQ(node.group, TreePlan::Group::Keep);
    EXPECT_TRUE(node.adopted_orphans.empty());
  }
  EXPECT_EQ(n[0].children_after_setsid, (std::vector<size_t>{1, 3, 5}));
  EXPECT_EQ(r->top_level_orphans, (std::vector<size_t>{6}));
  EXPECT_EQ(r->helper_count(), 1u);
  EXPECT_TRUE(r->warnings.empty());
}

TEST(PlanTree, RestoreSidAndPgidRecreateTheSessionAndItsGroups) {
  auto r = plan(session_image(), {true, true, 999, 998});
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto& n = r->nodes;
  EXPECT_TRUE(n[0].setsid);
  for (size_t i = 1; i < n.size(); ++i) EXPECT_FALSE(n[i].setsid) << i;
  // The orphan belongs to the leader's session: the leader's helper makes it.
  EXPECT_EQ(n[0].adopted_orphans, (std::vector<size_t>{6}));
  EXPECT_TRUE(r->top_level_orphans.empty());
  EXPECT_EQ(r->helper_count(), 1u);
  EXPECT_EQ(n[0].group, TreePlan::Group::Keep);  // a session leader leads its group already
  EXPECT_EQ(n[1].group, TreePlan::Group::Lead);
  EXPECT_EQ(n[2].group, TreePlan::Group::Join);
  EXPECT_EQ(n[2].join_pgid, 20);
  EXPECT_EQ(n[3].group, TreePlan::Group::Lead);
  EXPECT_EQ(n[4].join_pgid, 30);
  EXPECT_EQ(n[5].group, TreePlan::Group::Join);
  EXPECT_EQ(n[5].join_pgid, 10);
  EXPECT_EQ(n[6].group, TreePlan::Group::Join);
  EXPECT_EQ(n[6].join_pgid, 10);
  EXPECT_TRUE(r->warnings.empty()) << r->warnings.front();
}

TEST(PlanTree, ChildOfTheOldSessionIsCreatedBeforeTheParentsSetsid) {
  // 10 (session 5, outside) forks 11, then calls setsid; 11 stays in session 5... and 12 is
  // born after the setsid. Only possible when session 5 is the restarter's.
  std::vector<image::ProcessRecord> ps = {rec(10, 1, 10, 10), rec(11, 10, 5, 5),
                                          rec(12, 10, 10, 10)};
  auto r = plan(ps, {true, false, 5, 5});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->nodes[0].children_before_setsid, (std::vector<size_t>{1}));
  EXPECT_EQ(r->nodes[0].children_after_setsid, (std::vector<size_t>{2}));
  EXPECT_TRUE(r->warnings.empty());
}

TEST(PlanTree, SessionsAndGroupsThatCannotComeBackAreWarnedAbout) {
  // The root's session 5 and group 6 have no leader in the image, and the restarter is
  // elsewhere.
  std::vector<image::ProcessRecord> ps = {rec(10, 1, 6, 5), rec(11, 10, 6, 5)};
  auto r = plan(ps, {true, true, 99, 98});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->nodes[0].group, TreePlan::Group::Keep);
  EXPECT_EQ(r->nodes[1].group, TreePlan::Group::Keep);
  ASSERT_EQ(r->warnings.size(), 2u);  // once per session and per group
  EXPECT_NE(r->warnings[0].find("session 5"), std::string::npos) << r->warnings[0];
  EXPECT_NE(r->warnings[1].find("process group 6"), std::string::npos) << r->warnings[1];
}

TEST(PlanTree, TheRestartersOwnGroupIsJoined) {
  std::vector<image::ProcessRecord> ps = {rec(10, 1, 7, 3), rec(11, 10, 11, 3), rec(12, 11, 7, 3)};
  auto r = plan(ps, {false, true, 3, 7});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->nodes[0].group, TreePlan::Group::Join);
  EXPECT_EQ(r->nodes[1].group, TreePlan::Group::Lead);
  EXPECT_EQ(r->nodes[2].group, TreePlan::Group::Join);
  EXPECT_EQ(r->nodes[2].join_pgid, 7);
  EXPECT_TRUE(r->warnings.empty());
}

TEST(PlanTree, BadTreesAreRefused) {
  auto dup = plan({rec(10, 1, 10, 10), rec(10, 1, 10, 10)}, {});
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, EINVAL);
  auto order = plan({rec(11, 10, 10, 10), rec(10, 1, 10, 10)}, {});
  ASSERT_FALSE(order.ok());
  EXPECT_NE(order.error().message.find("tree order"), std::string::npos);
  auto cycle = plan({rec(10, 1, 10, 10), rec(20, 21, 10, 10), rec(21, 20, 10, 10)}, {});
  ASSERT_FALSE(cycle.ok());
  EXPECT_NE(cycle.error().message.find("cycle"), std::string::npos) << cycle.error().message;
  EXPECT_FALSE(plan({}, {}).ok());
}

}  // namespace
}  // namespace crkit::resources
