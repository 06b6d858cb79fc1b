// Placement: hostfiles and --hosts, the launch plan, and the restart plan of node images.
#include "snapshot/placement.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <string>
#include <vector>

#include "coord_test_util.hpp"

namespace crkit::coord {
namespace {

using test::make_manifest;
using ::testing::HasSubstr;

// "a:2 b:0" for checking host lists compactly.
std::string str(const std::vector<HostSlot>& hosts) {
  std::string s;
  for (const auto& h : hosts) s += (s.empty() ? "" : " ") + h.host + ":" + std::to_string(h.slots);
  return s;
}

// "a[0,1] b[2]"
std::string str(const std::vector<NodePlan>& plan) {
  std::string s;
  for (const auto& p : plan) {
    s += (s.empty() ? "" : " ") + p.host + "[";
    for (size_t i = 0; i < p.ranks.size(); ++i) s += (i ? "," : "") + std::to_string(p.ranks[i]);
    s += "]";
  }
  return s;
}

TEST(Hostfile, AllThreeStyles) {
  auto h = parse_hostfile(
      "# cluster nodes\n"
      "node1:4\n"
      "\n"
      "node2 slots=2 max_slots=8   # Open MPI style\n"
      "   node3\t\n"
      "node-4.example.org:1\r\n"
      "  # indented comment\n"
      "node_5",
      "hosts.txt");
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(str(*h), "node1:4 node2:2 node3:0 node-4.example.org:1 node_5:0");
}

TEST(Hostfile, DuplicatesMerged) {
  auto h = parse_hostfile("a:2\nb\na slots=3\nb\nc\n", "hf");
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(str(*h), "a:5 b:2 c:0");
}

TEST(Hostfile, ErrorsGiveFileLineAndWhy) {
  struct Case {
    const char* text;
    const char* expect;
  };
  const Case cases[] = {
      {"a\nb:x\n", "hf:2: slot count of 'b' 'x' is not a positive integer"},
      {"a:0\n", "hf:1: slot count of 'a' must be at least 1"},
      {"a:\n", "hf:1: slot count of 'a' is missing"},
      {"a:-2\n", "hf:1: slot count of 'a' '-2' is not a positive integer"},
      {"a:99999999999\n", "hf:1: slot count of 'a' '99999999999' is too large"},
      {"\n\na slots=\n", "hf:3: slots is missing"},
      {"a slots=0\n", "hf:1: slots must be at least 1"},
      {"a:2 slots=3\n", "hf:1: host a: both ':N' and 'slots=' give a slot count"},
      {"a slots=1 slots=2\n", "hf:1: host a: 'slots=' given twice"},
      {"a foo=1\n", "hf:1: unknown option 'foo' for host a"},
      {"a b\n", "hf:1: unexpected 'b' after host a"},
      {"a max_slots=x\n", "hf:1: max_slots 'x' is not a positive integer"},
      {"user@a\n", "hf:1: invalid character '@' in host name 'user@a'"},
      {":3\n", "hf:1: empty host name"},
      {"fe80::1\n", "hf:1: 'fe80::1': more than one ':'"},
      {"# only comments\n\n", "hf: no hosts listed"},
      {"", "hf: no hosts listed"},
  };
  for (const auto& c : cases) {
    auto h = parse_hostfile(c.text, "hf");
    ASSERT_FALSE(h) << c.text;
    EXPECT_EQ(h.error().code, EINVAL);
    EXPECT_THAT(h.error().message, HasSubstr(c.expect)) << c.text;
  }
}

TEST(HostsOption, Csv) {
  auto h = parse_hosts_option("a,b:2,c");
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(str(*h), "a:0 b:2 c:0");
  h = parse_hosts_option(" a , b:2 ,a:3");
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(str(*h), "a:4 b:2");
  h = parse_hosts_option("single");
  ASSERT_TRUE(h);
  EXPECT_EQ(str(*h), "single:0");
}

TEST(HostsOption, Errors) {
  EXPECT_THAT(parse_hosts_option("").error().message, HasSubstr("--hosts: no hosts given"));
  EXPECT_THAT(parse_hosts_option("a,,b").error().message, HasSubstr("entry 2 is empty"));
  EXPECT_THAT(parse_hosts_option("a,").error().message, HasSubstr("entry 2 is empty"));
  EXPECT_THAT(parse_hosts_option("a,b:x").error().message,
              HasSubstr("--hosts 'a,b:x': entry 2: slot count of 'b' 'x' is not a positive"));
  EXPECT_THAT(parse_hosts_option("a b").error().message,
              HasSubstr("invalid character ' ' in host name 'a b'"));
}

TEST(PlanLaunch, PerNode) {
  std::vector<HostSlot> hosts = {{"a", 0}, {"b", 8}, {"c", 1}, {"d", 0}};
  auto p = plan_launch(5, hosts, 2);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(str(*p), "a[0,1] b[2,3] c[4]");  // ppn overrides slots; d gets nothing
  p = plan_launch(8, hosts, 2);
  ASSERT_TRUE(p);
  EXPECT_EQ(str(*p), "a[0,1] b[2,3] c[4,5] d[6,7]");
  p = plan_launch(9, hosts, 2);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, EINVAL);
  EXPECT_THAT(p.error().message,
              HasSubstr("cannot launch 9 ranks at 2 per node: that needs 5 hosts, the host list "
                        "has 4 (a: slots unspecified, b: 8 slots, c: 1 slot, d: slots "
                        "unspecified)"));
}

TEST(PlanLaunch, Slots) {
  std::vector<HostSlot> hosts = {{"a", 2}, {"b", 0}, {"c", 3}, {"d", 4}};
  auto p = plan_launch(6, hosts, 0);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(str(*p), "a[0,1] b[2] c[3,4,5]");
  p = plan_launch(2, hosts, 0);
  ASSERT_TRUE(p);
  EXPECT_EQ(str(*p), "a[0,1]");
  p = plan_launch(10, hosts, 0);
  ASSERT_TRUE(p);
  EXPECT_EQ(str(*p), "a[0,1] b[2] c[3,4,5] d[6,7,8,9]");
}

TEST(PlanLaunch, TooFew) {
  auto p = plan_launch(4, {{"a", 2}, {"b", 0}}, 0);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, EINVAL);
  EXPECT_THAT(p.error().message,
              HasSubstr("cannot launch 4 ranks: the hosts have 3 slots in all (a: 2 slots, b: "
                        "slots unspecified; a host without a slot count takes 1)"));
  EXPECT_THAT(plan_launch(0, {{"a", 1}}, 0).error().message, HasSubstr("must be positive"));
  EXPECT_THAT(plan_launch(1, {}, 0).error().message, HasSubstr("no hosts"));
  EXPECT_THAT(plan_launch(1, {{"a", 1}}, -1).error().message, HasSubstr("negative"));
}

TEST(PlanRestart, ImagesInOrderOntoNewHosts) {
  Manifest m = make_manifest({{0, 3}, {1, 4}, {2, 5}});  // cyclic ranks: kept per image
  std::vector<HostSlot> hosts = {{"z", 2}, {"x", 0}, {"y", 4}};
  auto p = plan_restart(m, hosts);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(str(*p), "z[0,3] x[1,4] y[2,5]");
  // More hosts than images: the first ones are used.
  hosts.push_back({"w", 2});
  p = plan_restart(m, {{"w", 2}, {"v", 2}, {"u", 2}, {"t", 2}});
  ASSERT_TRUE(p);
  EXPECT_EQ(str(*p), "w[0,3] v[1,4] u[2,5]");
}

TEST(PlanRestart, TooFewHosts) {
  Manifest m = make_manifest({{0, 1}, {2, 3}, {4, 5}});
  auto p = plan_restart(m, {{"node4", 2}, {"node5", 2}});
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, EINVAL);
  EXPECT_EQ(p.error().message,
            "cannot restart snapshot 3 of job 'job42': the snapshot has 3 node images of 2 ranks "
            "each; the new host list has 2 hosts (node4: 2 slots, node5: 2 slots): need 3 hosts "
            "with at least 2 slots each");
  p = plan_restart(m, {});
  ASSERT_FALSE(p);
  EXPECT_THAT(p.error().message, HasSubstr("the new host list has 0 hosts: need 3 hosts"));
}

TEST(PlanRestart, SlotsTooSmall) {
  Manifest m = make_manifest({{0, 1}, {2, 3}});
  auto p = plan_restart(m, {{"a", 2}, {"b", 1}, {"c", 1}});
  ASSERT_FALSE(p);
  EXPECT_THAT(p.error().message,
              HasSubstr("the snapshot has 2 node images of 2 ranks each; the new host list has 3 "
                        "hosts (a: 2 slots, b: 1 slot, c: 1 slot): need 2 hosts with at least 2 "
                        "slots each"));
  // Unspecified slots take any image.
  p = plan_restart(m, {{"a", 2}, {"b", 1}, {"c", 0}});
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(str(*p), "a[0,1] c[2,3]");
}

TEST(PlanRestart, MixedSizesLookAhead) {
  Manifest m = make_manifest({{0}, {1, 2}, {3}});
  // First fit would put image 0 on a and leave image 1 nowhere.
  auto p = plan_restart(m, {{"a", 2}, {"b", 1}, {"c", 1}});
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(str(*p), "b[0] a[1,2] c[3]");
  p = plan_restart(m, {{"a", 1}, {"b", 1}, {"c", 1}});
  ASSERT_FALSE(p);
  EXPECT_THAT(p.error().message,
              HasSubstr("the snapshot has 3 node images (1 of 2 ranks, 2 of 1 rank); the new host "
                        "list has 3 hosts (a: 1 slot, b: 1 slot, c: 1 slot): need 3 hosts: 1 with "
                        "at least 2 slots, 2 more with at least 1 slot"));
}

TEST(PlanRestart, HostUsedOnceOnly) {
  Manifest m = make_manifest({{0, 1}, {2, 3}, {4, 5}});
  // Plenty of slots, but an image needs a host of its own.
  auto p = plan_restart(m, {{"big1", 64}, {"big2", 64}});
  ASSERT_FALSE(p);
  EXPECT_THAT(p.error().message, HasSubstr("need 3 hosts with at least 2 slots each"));
  p = plan_restart(m, {{"a", 2}, {"b", 2}, {"a", 2}});
  ASSERT_FALSE(p);
  EXPECT_THAT(p.error().message, HasSubstr("host a is listed twice"));
}

TEST(PlanRestart, SingleImage) {
  Manifest m = make_manifest({{0}});
  auto p = plan_restart(m, {{"solo", 0}});
  ASSERT_TRUE(p);
  EXPECT_EQ(str(*p), "solo[0]");
  Manifest big = make_manifest({{0, 1, 2, 3}});
  auto q = plan_restart(big, {{"small", 2}});
  ASSERT_FALSE(q);
  EXPECT_THAT(q.error().message,
              HasSubstr("the snapshot has 1 node image of 4 ranks; the new host list has 1 host "
                        "(small: 2 slots): need 1 host with at least 4 slots"));
}

}  // namespace
}  // namespace crkit::coord
