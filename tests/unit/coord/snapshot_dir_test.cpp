// A job's snapshot directory: naming, listing committed snapshots, pruning, and removing a
// partial snapshot, never through a symbolic link.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "coord_test_util.hpp"
#include "snapshot/manifest.hpp"

namespace crkit::coord {
namespace {

using test::exists_nofollow;
using test::read_file;
using test::TempDir;
using test::write_file;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// JOB/snap-<seq>, committed (an image and a manifest.json) or partial (an image only).
std::string make_snapshot(const TempDir& job, uint64_t seq, bool committed) {
  const std::string dir = job / snapshot_dir_name(seq);
  EXPECT_EQ(::mkdir(dir.c_str(), 0700), 0) << dir;
  EXPECT_EQ(::mkdir((dir + "/node0").c_str(), 0700), 0);
  write_file(dir + "/node0/context.0", "image data");
  write_file(dir + "/.manifest.json.tmp", "");  // as an interrupted commit leaves it
  if (committed) write_file(dir + "/manifest.json", "{}");
  return dir;
}

TEST(SnapshotDir, Names) {
  EXPECT_EQ(snapshot_dir_name(0), "snap-000000");
  EXPECT_EQ(snapshot_dir_name(3), "snap-000003");
  EXPECT_EQ(snapshot_dir_name(999999), "snap-999999");
  EXPECT_EQ(snapshot_dir_name(1234567), "snap-1234567");
}

TEST(SnapshotDir, ListOnlyCommittedAscending) {
  TempDir job;
  make_snapshot(job, 10, true);
  make_snapshot(job, 1, true);
  make_snapshot(job, 2, false);                                 // partial
  make_snapshot(job, 1234567, true);                            // seven digits
  ASSERT_EQ(::mkdir((job / "snap-0000003").c_str(), 0700), 0);  // not a name we write
  write_file(job / "snap-0000003/manifest.json", "{}");
  ASSERT_EQ(::mkdir((job / "other").c_str(), 0700), 0);
  write_file(job / "other/manifest.json", "{}");
  write_file(job / "snap-000005", "a file");
  ASSERT_EQ(::symlink("snap-000010", (job / "snap-000004").c_str()), 0);  // not followed
  ASSERT_EQ(::mkdir((job / "snap-000006").c_str(), 0700), 0);
  ASSERT_EQ(::symlink("../snap-000010/manifest.json", (job / "snap-000006/manifest.json").c_str()),
            0);  // a manifest that is a link does not commit

  auto seqs = list_snapshots(job.path());
  ASSERT_TRUE(seqs) << seqs.error().message;
  EXPECT_THAT(*seqs, ElementsAre(1u, 10u, 1234567u));
}

TEST(SnapshotDir, ListMissingJobDir) {
  TempDir job;
  auto seqs = list_snapshots(job / "nope");
  ASSERT_FALSE(seqs);
  EXPECT_EQ(seqs.error().code, ENOENT);
  EXPECT_THAT(seqs.error().message, HasSubstr(job / "nope"));
}

TEST(SnapshotDir, PruneKeepsNewestCommitted) {
  TempDir job;
  for (uint64_t s : {1, 2, 3, 4}) make_snapshot(job, s, true);
  make_snapshot(job, 5, false);  // partial, newest: not counted, not touched
  auto pruned = prune_snapshots(job.path(), 2);
  ASSERT_TRUE(pruned) << pruned.error().message;
  EXPECT_FALSE(exists_nofollow(job / "snap-000001"));
  EXPECT_FALSE(exists_nofollow(job / "snap-000002"));
  EXPECT_TRUE(exists_nofollow(job / "snap-000003/manifest.json"));
  EXPECT_TRUE(exists_nofollow(job / "snap-000004/node0/context.0"));
  EXPECT_TRUE(exists_nofollow(job / "snap-000005/node0/context.0"));
  auto seqs = list_snapshots(job.path());
  ASSERT_TRUE(seqs);
  EXPECT_THAT(*seqs, ElementsAre(3u, 4u));

  ASSERT_TRUE(prune_snapshots(job.path(), 5));  // fewer than keep: nothing to do
  EXPECT_THAT(*list_snapshots(job.path()), ElementsAre(3u, 4u));
  ASSERT_TRUE(prune_snapshots(job.path(), 0));
  EXPECT_TRUE(list_snapshots(job.path())->empty());
  EXPECT_TRUE(exists_nofollow(job / "snap-000005"));
}

TEST(SnapshotDir, PruneNeverFollowsSymlinks) {
  TempDir job;
  TempDir outside;
  write_file(outside / "precious", "keep me");
  ASSERT_EQ(::mkdir((outside / "tree").c_str(), 0700), 0);
  write_file(outside / "tree/precious", "keep me too");
  const std::string s1 = make_snapshot(job, 1, true);
  make_snapshot(job, 2, true);
  ASSERT_EQ(::symlink((outside / "precious").c_str(), (s1 + "/node0/link").c_str()), 0);
  ASSERT_EQ(::symlink((outside / "tree").c_str(), (s1 + "/dirlink").c_str()), 0);

  auto st = prune_snapshots(job.path(), 1);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EPERM);
  EXPECT_THAT(st.error().message, HasSubstr("symbolic link"));
  EXPECT_THAT(st.error().message, HasSubstr("pruning snapshot 1 of " + job.path()));
  // Refused before anything was removed: still committed, still whole; nothing outside lost.
  EXPECT_TRUE(exists_nofollow(s1 + "/manifest.json"));
  EXPECT_TRUE(exists_nofollow(s1 + "/node0/context.0"));
  EXPECT_EQ(read_file(outside / "precious"), "keep me");
  EXPECT_EQ(read_file(outside / "tree/precious"), "keep me too");
}

TEST(SnapshotDir, PruneRefusesFifo) {
  TempDir job;
  const std::string s1 = make_snapshot(job, 1, true);
  make_snapshot(job, 2, true);
  ASSERT_EQ(::mkfifo((s1 + "/fifo").c_str(), 0600), 0);
  auto st = prune_snapshots(job.path(), 1);
  ASSERT_FALSE(st);
  EXPECT_THAT(st.error().message, HasSubstr(s1 + "/fifo: it is a FIFO"));
  EXPECT_TRUE(exists_nofollow(s1 + "/manifest.json"));
}

TEST(SnapshotDir, RemovePartial) {
  TempDir job;
  const std::string partial = make_snapshot(job, 7, false);
  auto removed = remove_partial(partial + "/");
  ASSERT_TRUE(removed) << removed.error().message;
  EXPECT_FALSE(exists_nofollow(partial));
  // Already gone: nothing to do.
  EXPECT_TRUE(remove_partial(partial));
}

TEST(SnapshotDir, RemovePartialRefusesCommitted) {
  TempDir job;
  const std::string committed = make_snapshot(job, 8, true);
  auto st = remove_partial(committed);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EEXIST);
  EXPECT_THAT(st.error().message, HasSubstr("committed snapshot"));
  EXPECT_THAT(st.error().message, HasSubstr(committed));
  EXPECT_TRUE(exists_nofollow(committed + "/node0/context.0"));
}

TEST(SnapshotDir, RemovePartialRefusesSymlinkAndFile) {
  TempDir job;
  TempDir outside;
  write_file(outside / "data", "x");
  const std::string link = job / "snap-000009";
  ASSERT_EQ(::symlink(outside.path().c_str(), link.c_str()), 0);
  auto st = remove_partial(link);
  ASSERT_FALSE(st);
  EXPECT_THAT(st.error().message, HasSubstr("symbolic link"));
  EXPECT_EQ(read_file(outside / "data"), "x");
  EXPECT_TRUE(exists_nofollow(link));

  write_file(job / "file", "y");
  st = remove_partial(job / "file");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ENOTDIR);
  EXPECT_EQ(read_file(job / "file"), "y");
}

TEST(SnapshotDir, RemovePartialOfOtherUserRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create a file of another user";
  TempDir job;
  const std::string partial = make_snapshot(job, 3, false);
  // Root may remove anything of a snapshot; only a non-root caller checks owners. So the
  // snapshot belongs to uid 12345 but for one file of uid 23456, and a child that gives up
  // root for uid 12345 tries to remove it.
  ASSERT_EQ(::chown((partial + "/node0/context.0").c_str(), 12345, 12345), 0);
  ASSERT_EQ(::chown(job.path().c_str(), 12345, 12345), 0);
  ASSERT_EQ(::chown(partial.c_str(), 12345, 12345), 0);
  ASSERT_EQ(::chown((partial + "/node0").c_str(), 12345, 12345), 0);
  ASSERT_EQ(::chown((partial + "/.manifest.json.tmp").c_str(), 23456, 23456), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setgid(12345) != 0 || ::setuid(12345) != 0) ::_exit(2);
    auto st = remove_partial(partial);
    bool ok = !st && st.error().code == EPERM &&
              st.error().message.find("belongs to uid 23456") != std::string::npos;
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(exists_nofollow(partial + "/node0/context.0"));
}

}  // namespace
}  // namespace crkit::coord
