// The command lines of cr_mpirun, cr_mpirestart and cr_snapshot, parsed into their structs.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tools/tool_options.hpp"

namespace crkit::mpi_tools {
namespace {

using Args = std::vector<std::string>;
const std::string kCwd = "/home/u/run";

Result<MpirunOptions> mpirun(Args a) {
  a.insert(a.begin(), "cr_mpirun");
  return parse_mpirun_args(a, kCwd);
}
Result<MpirestartOptions> mpirestart(Args a) {
  a.insert(a.begin(), "cr_mpirestart");
  return parse_mpirestart_args(a, kCwd);
}
Result<SnapshotOptions> snapshot(Args a) {
  a.insert(a.begin(), "cr_snapshot");
  return parse_snapshot_args(a);
}

TEST(MpirunArgs, MinimalCommandLineTakesDefaults) {
  auto o = mpirun({"-n", "4", "./ring", "10"});
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->action, Action::Run);
  EXPECT_EQ(o->nranks, 4);
  EXPECT_EQ(o->ppn, 0);
  EXPECT_EQ(o->argv, (Args{"./ring", "10"}));
  EXPECT_EQ(o->job.checkpoint_dir, "/home/u/run/crkit-snapshots");
  EXPECT_EQ(o->job.launcher, (Args{"ssh", "-x"}));
  EXPECT_TRUE(o->job.hosts.empty());
  EXPECT_TRUE(o->job.hostfile.empty());
  EXPECT_TRUE(o->job.job.empty());
  EXPECT_FALSE(o->job.coord);
  EXPECT_FALSE(o->nolocal);
  EXPECT_FALSE(o->job.verbose);
  EXPECT_EQ(o->job.interval, 0u);
  EXPECT_EQ(o->job.keep, 0u);
}

TEST(MpirunArgs, MpiexecSpellingsOfTheRankCount) {
  for (const Args& a : {Args{"-np", "3", "prog"}, Args{"--np", "3", "prog"}, Args{"--np=3", "prog"},
                        Args{"-n3", "prog"}, Args{"-n", "3", "prog"}}) {
    auto o = mpirun(a);
    ASSERT_TRUE(o) << a[0] << ": " << o.error().message;
    EXPECT_EQ(o->nranks, 3) << a[0];
    EXPECT_EQ(o->argv, Args{"prog"}) << a[0];
  }
  auto o = mpirun({"-ppn", "2", "-hosts", "a,b", "-n", "4", "prog"});
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->ppn, 2);
  ASSERT_EQ(o->job.hosts.size(), 2u);
}

TEST(MpirunArgs, OptionsEndAtTheProgram) {
  auto o = mpirun({"-n", "2", "prog", "-v", "--hosts", "x", "-n", "9"});
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_FALSE(o->job.verbose);
  EXPECT_TRUE(o->job.hosts.empty());
  EXPECT_EQ(o->nranks, 2);
  EXPECT_EQ(o->argv, (Args{"prog", "-v", "--hosts", "x", "-n", "9"}));
  auto dashdash = mpirun({"-n", "2", "--", "-prog-with-dash"});
  ASSERT_TRUE(dashdash) << dashdash.error().message;
  EXPECT_EQ(dashdash->argv, Args{"-prog-with-dash"});
}

TEST(MpirunArgs, EveryOption) {
  auto o = mpirun({"-n",
                   "8",
                   "--hostfile",
                   "hosts.txt",
                   "--ppn",
                   "4",
                   "--launcher",
                   "ssh  -p 22",
                   "--checkpoint-dir",
                   "ck/./x/",
                   "--checkpoint-interval",
                   "60",
                   "--keep",
                   "2",
                   "--job",
                   "run-1.a_b",
                   "--coord",
                   "head:7000",
                   "--coord-host",
                   "head.ib",
                   "--nolocal",
                   "--env-exclude",
                   "SECRET",
                   "--env-exclude",
                   "SLURM_*",
                   "-v",
                   "prog"});
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->job.hostfile, "hosts.txt");
  EXPECT_EQ(o->ppn, 4);
  EXPECT_EQ(o->job.launcher, (Args{"ssh", "-p", "22"}));
  EXPECT_EQ(o->job.checkpoint_dir, "/home/u/run/ck/x");
  EXPECT_EQ(o->job.interval, 60u);
  EXPECT_EQ(o->job.keep, 2u);
  EXPECT_EQ(o->job.job, "run-1.a_b");
  ASSERT_TRUE(o->job.coord);
  EXPECT_EQ(o->job.coord->host, "head");
  EXPECT_EQ(o->job.coord->port, 7000);
  EXPECT_EQ(o->job.coord_host, "head.ib");
  EXPECT_TRUE(o->nolocal);
  EXPECT_EQ(o->env_exclude, (Args{"SECRET", "SLURM_*"}));
  EXPECT_TRUE(o->job.verbose);
  EXPECT_EQ(o->argv, Args{"prog"});
}

TEST(MpirunArgs, HostsAreParsedAndLauncherNoneRunsDirectly) {
  auto o = mpirun({"--hosts", "a,b:2", "--launcher=none", "-f", "ignored-not", "-n", "3", "p"});
  ASSERT_FALSE(o);  // --hosts and --hostfile together
  EXPECT_NE(o.error().message.find("not both"), std::string::npos) << o.error().message;
  o = mpirun({"--hosts", "a,b:2", "--launcher=none", "-n", "3", "p"});
  ASSERT_TRUE(o) << o.error().message;
  ASSERT_EQ(o->job.hosts.size(), 2u);
  EXPECT_EQ(o->job.hosts[0].host, "a");
  EXPECT_EQ(o->job.hosts[1].host, "b");
  EXPECT_EQ(o->job.hosts[1].slots, 2);
  EXPECT_TRUE(o->job.launcher.empty());
  o = mpirun({"--checkpoint-dir", "/abs//dir/", "-n", "1", "p"});
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->job.checkpoint_dir, "/abs/dir");
}

TEST(MpirunArgs, HelpAndVersion) {
  for (const char* h : {"-h", "--help", "-?"}) {
    auto o = mpirun({h});
    ASSERT_TRUE(o) << h << ": " << o.error().message;
    EXPECT_EQ(o->action, Action::Help) << h;
  }
  auto v = mpirun({"--version"});
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(v->action, Action::Version);
}

// Each bad command line fails with EINVAL and a message containing `says`.
void expect_mpirun_error(const Args& a, const std::string& says) {
  auto o = mpirun(a);
  ASSERT_FALSE(o) << "accepted: " << testing::PrintToString(a);
  EXPECT_EQ(o.error().code, EINVAL);
  EXPECT_NE(o.error().message.find(says), std::string::npos)
      << testing::PrintToString(a) << " -> " << o.error().message;
}

TEST(MpirunArgs, BadCommandLinesSayWhy) {
  expect_mpirun_error({"prog"}, "-n N");
  expect_mpirun_error({"-n", "2"}, "no program");
  expect_mpirun_error({"-n", "0", "p"}, "'0' is not a number from 1");
  expect_mpirun_error({"-n", "2x", "p"}, "'2x'");
  expect_mpirun_error({"-n"}, "needs an argument");
  expect_mpirun_error({"-n", "2", "--keep"}, "needs an argument");
  expect_mpirun_error({"--bogus", "-n", "2", "p"}, "unrecognized option '--bogus'");
  expect_mpirun_error({"-n", "2", "-x", "p"}, "unrecognized option");
  expect_mpirun_error({"--job", "a/b", "-n", "2", "p"}, "--job");
  expect_mpirun_error({"--job", ".hidden", "-n", "2", "p"}, "must not start");
  expect_mpirun_error({"--coord", "nohost", "-n", "2", "p"}, "--coord");
  expect_mpirun_error({"--coord", "h:0", "-n", "2", "p"}, "--coord");
  expect_mpirun_error({"--launcher", "  ", "-n", "2", "p"}, "--launcher");
  expect_mpirun_error({"--env-exclude", "A=B", "-n", "2", "p"}, "--env-exclude");
  expect_mpirun_error({"--hosts", "a,,b", "-n", "2", "p"}, "--hosts");
  expect_mpirun_error({"--ppn", "-1", "-n", "2", "p"}, "--ppn");
  expect_mpirun_error({"--checkpoint-interval", "soon", "-n", "2", "p"}, "--checkpoint-interval");
}

TEST(MpirunArgs, ParsesAgainAfterAnError) {
  // getopt keeps state in globals; each parse must start afresh.
  ASSERT_FALSE(mpirun({"-n", "2", "-x", "p"}));
  auto o = mpirun({"-n", "5", "q"});
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->nranks, 5);
  EXPECT_EQ(o->argv, Args{"q"});
}

TEST(MpirestartArgs, SnapshotFirstOptionsAfter) {
  auto o = mpirestart({"ck/job/snap-000001", "--hosts", "n1,n2", "--no-verify", "--pid-namespace",
                       "--job", "again", "--keep", "3", "-v"});
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->snapshot, "ck/job/snap-000001");
  EXPECT_EQ(o->job.hosts.size(), 2u);
  EXPECT_FALSE(o->verify);
  EXPECT_TRUE(o->pid_namespace_always);
  EXPECT_EQ(o->job.job, "again");
  EXPECT_EQ(o->job.keep, 3u);
  EXPECT_TRUE(o->job.verbose);
  EXPECT_TRUE(o->job.checkpoint_dir.empty());  // the snapshot's own CKPT_DIR, decided later
}

TEST(MpirestartArgs, DefaultsAndOptionsBeforeTheSnapshot) {
  auto o = mpirestart({"--launcher", "nsrsh", "--checkpoint-dir", "other", "s/manifest.json"});
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->snapshot, "s/manifest.json");
  EXPECT_TRUE(o->verify);
  EXPECT_FALSE(o->pid_namespace_always);
  EXPECT_EQ(o->job.launcher, Args{"nsrsh"});
  EXPECT_EQ(o->job.checkpoint_dir, "/home/u/run/other");
}

TEST(MpirestartArgs, BadCommandLines) {
  auto none = mpirestart({"--no-verify"});
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("no snapshot"), std::string::npos);
  auto two = mpirestart({"a", "b"});
  ASSERT_FALSE(two);
  EXPECT_NE(two.error().message.find("'b' is extra"), std::string::npos) << two.error().message;
  auto both = mpirestart({"a", "-f", "hf", "--hosts", "x"});
  ASSERT_FALSE(both);
  auto np = mpirestart({"a", "-n", "4"});  // the rank count comes from the snapshot
  ASSERT_FALSE(np);
  auto help = mpirestart({"--help"});
  ASSERT_TRUE(help);
  EXPECT_EQ(help->action, Action::Help);
}

TEST(SnapshotArgs, DefaultTakesASnapshot) {
  auto o = snapshot({"1234"});
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->mode, SnapshotOptions::Mode::Snapshot);
  EXPECT_EQ(o->job, "1234");
  EXPECT_FALSE(o->term);
  EXPECT_EQ(o->timeout, 600u);
  EXPECT_FALSE(o->json);
  EXPECT_FALSE(o->coord);
}

TEST(SnapshotArgs, Modes) {
  auto t = snapshot({"--term", "--timeout", "30", "--json", "job1"});
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_TRUE(t->term);
  EXPECT_EQ(t->timeout, 30u);
  EXPECT_TRUE(t->json);
  auto s = snapshot({"job1", "--status", "--coord", "[::1]:9000"});
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->mode, SnapshotOptions::Mode::Status);
  ASSERT_TRUE(s->coord);
  EXPECT_EQ(s->coord->host, "::1");
  auto l = snapshot({"-l", "job1"});
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(l->mode, SnapshotOptions::Mode::List);
  auto v = snapshot({"-v", "--list", "job1"});
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_TRUE(v->verbose);
}

TEST(SnapshotArgs, BadCommandLines) {
  EXPECT_FALSE(snapshot({}));
  EXPECT_FALSE(snapshot({"a", "b"}));
  EXPECT_FALSE(snapshot({"--status", "--list", "a"}));
  EXPECT_FALSE(snapshot({"--term", "--status", "a"}));
  EXPECT_FALSE(snapshot({"--timeout", "-5", "a"}));
  EXPECT_FALSE(snapshot({"--coord", "x", "a"}));
  EXPECT_FALSE(snapshot({"../etc"}));
  auto bad = snapshot({"--frobnicate", "a"});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("--frobnicate"), std::string::npos) << bad.error().message;
}

TEST(AbsolutePath, RelativeAbsoluteAndDots) {
  EXPECT_EQ(absolute_path("x", "/a/b"), "/a/b/x");
  EXPECT_EQ(absolute_path("./x/./y/", "/a"), "/a/x/y");
  EXPECT_EQ(absolute_path("/p//q/", "/a"), "/p/q");
  EXPECT_EQ(absolute_path("../x", "/a/b"), "/a/b/../x");  // ".." is not resolved by text
  EXPECT_EQ(absolute_path("/", "/a"), "/");
  EXPECT_EQ(absolute_path(".", "/"), "/");
}

}  // namespace
}  // namespace crkit::mpi_tools
