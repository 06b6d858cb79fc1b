// The PMI-1 line parser/formatter and the KVS visibility rules, without sockets.
#include <gtest/gtest.h>

#include "pmi/fence.hpp"
#include "pmi/kvs.hpp"
#include "pmi/wire.hpp"

namespace crkit::pmi {
namespace {

TEST(PmiWire, ParsesAnMpichPutLine) {
  // ch3's business card, as MPIDI_PG_SetConnInfo puts it.
  auto c = parse_command(
      "cmd=put kvsname=kvs_42_0 key=P3-businesscard "
      "value=description#node7$port#40123$ifname#10.0.0.7$");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->name, "put");
  EXPECT_FALSE(c->multi_line);
  ASSERT_EQ(c->args.size(), 3u);
  EXPECT_EQ(*c->find("kvsname"), "kvs_42_0");
  EXPECT_EQ(*c->find("key"), "P3-businesscard");
  EXPECT_EQ(*c->find("value"), "description#node7$port#40123$ifname#10.0.0.7$");
  EXPECT_EQ(c->find("rc"), nullptr);
}

TEST(PmiWire, ValueSplitsAtTheFirstEqualsAndStopsAtABlank) {
  auto c = parse_command("cmd=put   key=k  value=segments=3=x  extra=");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(*c->find("value"), "segments=3=x");
  EXPECT_EQ(*c->find("extra"), "");
}

TEST(PmiWire, FirstDuplicateWinsLikePmiuGetval) {
  auto c = parse_command("cmd=get key=a key=b");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c->find("key"), "a");
}

TEST(PmiWire, RejectsMalformedLines) {
  auto no_eq = parse_command("cmd=put key");
  ASSERT_FALSE(no_eq);
  EXPECT_NE(no_eq.error().message.find("'key'"), std::string::npos) << no_eq.error().message;
  EXPECT_FALSE(parse_command("cmd=put =v"));
  auto no_cmd = parse_command("key=v");
  ASSERT_FALSE(no_cmd);
  EXPECT_NE(no_cmd.error().message.find("no cmd="), std::string::npos);
}

TEST(PmiWire, RecognisesTheMultiLineSpawnForm) {
  auto c = parse_command("mcmd=spawn");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->multi_line);
  EXPECT_EQ(c->name, "spawn");
}

TEST(PmiWire, FormatsReplies) {
  EXPECT_EQ(format_command("barrier_out", {}), "cmd=barrier_out\n");
  EXPECT_EQ(format_command("get_result", {{"rc", "0"}, {"value", "a=b"}}),
            "cmd=get_result rc=0 value=a=b\n");
  EXPECT_EQ(wire_token("bad thing:\n\tx"), "bad_thing:__x");
}

TEST(PmiKvs, OwnPutsAreVisibleAtOnceOthersAfterTheFence) {
  Kvs kvs(KvsMap{{"PMI_process_mapping", "(vector,(0,1,2))"}});
  kvs.put(0, "k0", "v0");
  ASSERT_NE(kvs.get(0, "k0"), nullptr);
  EXPECT_EQ(*kvs.get(0, "k0"), "v0");
  EXPECT_EQ(kvs.get(1, "k0"), nullptr);
  ASSERT_NE(kvs.get(1, "PMI_process_mapping"), nullptr);

  KeyValues batch = kvs.take_pending();
  ASSERT_EQ(batch.size(), 1u);
  kvs.apply_fence(batch, {{"k0", "v0"}, {"remote", "r"}});
  ASSERT_NE(kvs.get(1, "k0"), nullptr);
  EXPECT_EQ(*kvs.get(1, "remote"), "r");
  EXPECT_TRUE(kvs.take_pending().empty());
}

TEST(PmiKvs, AFenceResultOverridesAStaleOwnView) {
  Kvs kvs;
  kvs.put(0, "k", "mine");
  KeyValues batch = kvs.take_pending();
  kvs.apply_fence(batch, {{"k", "job-wide"}});
  EXPECT_EQ(*kvs.get(0, "k"), "job-wide");
}

TEST(PmiKvs, PutsDuringAFenceStayPendingAndVisibleToTheirRank) {
  Kvs kvs;
  kvs.put(0, "a", "1");
  KeyValues batch = kvs.take_pending();
  kvs.put(0, "b", "2");  // while the fence is in flight
  kvs.apply_fence(batch, {{"a", "1"}});
  EXPECT_EQ(*kvs.get(0, "b"), "2");
  EXPECT_EQ(kvs.get(1, "b"), nullptr);
  KeyValues next = kvs.take_pending();
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].first, "b");
}

TEST(PmiKvs, AFailedFenceHandsItsBatchToTheNextOne) {
  Kvs kvs;
  kvs.put(0, "a", "old");
  KeyValues batch = kvs.take_pending();
  kvs.put(0, "a", "new");
  kvs.restore_pending(batch);
  KeyValues next = kvs.take_pending();
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].second, "new");
}

TEST(PmiKvs, IndexWalksTheRanksViewInKeyOrder) {
  Kvs kvs(KvsMap{{"b", "global-b"}, {"d", "global-d"}});
  kvs.put(0, "b", "own-b");
  kvs.put(0, "c", "own-c");
  std::vector<std::pair<std::string, std::string>> seen;
  for (size_t i = 0;; ++i) {
    auto kv = kvs.at_index(0, i);
    if (!kv) break;
    seen.push_back(*kv);
  }
  std::vector<std::pair<std::string, std::string>> want{
      {"b", "own-b"}, {"c", "own-c"}, {"d", "global-d"}};
  EXPECT_EQ(seen, want);
  EXPECT_EQ(kvs.at_index(1, 0)->second, "global-b");
  EXPECT_FALSE(kvs.at_index(1, 2));
}

TEST(PmiFence, LocalBackendReturnsThePutsThemselves) {
  LocalFenceBackend local;
  std::optional<KvsMap> got;
  local.fence({{"x", "1"}, {"y", "2"}}, [&](Result<KvsMap> r) {
    ASSERT_TRUE(r);
    got = *r;
  });
  ASSERT_TRUE(got);
  EXPECT_EQ(got->size(), 2u);
  EXPECT_EQ(got->at("y"), "2");
}

}  // namespace
}  // namespace crkit::pmi
