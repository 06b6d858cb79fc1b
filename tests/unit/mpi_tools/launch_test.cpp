// What cr_mpirun and cr_mpirestart compute before anything runs: the job's environment, the
// agents' command lines, the hosts, and the SPEC submitted to the coordinator.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tools/job_launch.hpp"

namespace crkit::mpi_tools {
namespace {

using Args = std::vector<std::string>;

TEST(JobEnvironment, DropsPmiAndExcludedAddsCheckpointing) {
  const char* envp[] = {"PATH=/usr/bin", "HOME=/home/u", "PMI_FD=5",      "PMI_RANK=0",
                        "PMI_PORT=h:1",  "SECRET=x",     "SLURM_JOBID=7", "SLURM_NODELIST=a",
                        "SLURMD=keep",   "EMPTY=",       "A=b=c",         "PMIX_RANK=0",
                        nullptr};
  auto env = job_environment(envp, {"SECRET", "SLURM_*"}, false);
  EXPECT_EQ(env.at("PATH"), "/usr/bin");
  EXPECT_EQ(env.at("HOME"), "/home/u");
  EXPECT_EQ(env.at("EMPTY"), "");
  EXPECT_EQ(env.at("A"), "b=c");
  EXPECT_EQ(env.at("SLURMD"), "keep");  // "SLURM_*" is a prefix with the underscore
  EXPECT_EQ(env.at("PMIX_RANK"), "0");  // PMIx is not PMI-1's PMI_ namespace
  EXPECT_EQ(env.count("PMI_FD"), 0u);
  EXPECT_EQ(env.count("PMI_RANK"), 0u);
  EXPECT_EQ(env.count("PMI_PORT"), 0u);
  EXPECT_EQ(env.count("SECRET"), 0u);
  EXPECT_EQ(env.count("SLURM_JOBID"), 0u);
  EXPECT_EQ(env.count("SLURM_NODELIST"), 0u);
  EXPECT_EQ(env.at("MPIR_CVAR_NEMESIS_ENABLE_CKPOINT"), "1");
  EXPECT_EQ(env.count("MPIR_CVAR_NOLOCAL"), 0u);
}

TEST(JobEnvironment, NolocalAndOverrides) {
  const char* envp[] = {"MPIR_CVAR_NEMESIS_ENABLE_CKPOINT=0", "X=1", "X=2", "noequals", nullptr};
  auto env = job_environment(envp, {}, true);
  EXPECT_EQ(env.at("MPIR_CVAR_NEMESIS_ENABLE_CKPOINT"), "1");  // checkpointing is the point
  EXPECT_EQ(env.at("MPIR_CVAR_NOLOCAL"), "1");
  EXPECT_EQ(env.at("X"), "1");  // as getenv sees it
  EXPECT_EQ(env.count("noequals"), 0u);
  EXPECT_EQ(env.size(), 3u);
}

TEST(ShellQuote, QuotesOnlyWhatTheRemoteShellWouldChange) {
  EXPECT_EQ(shell_quote("/opt/crkit/bin/cr_agent"), "/opt/crkit/bin/cr_agent");
  EXPECT_EQ(shell_quote("head:4711"), "head:4711");
  EXPECT_EQ(shell_quote("[::1]:4711"), "'[::1]:4711'");
  EXPECT_EQ(shell_quote("/my dir/cr_agent"), "'/my dir/cr_agent'");
  EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
  EXPECT_EQ(shell_quote(""), "''");
}

TEST(AgentCommand, LocalRunsTheAgentDirectly) {
  auto cmd = agent_command({"ssh", "-x"}, "node1", true, "/b/cr_agent", "head:99", "j1", 0);
  EXPECT_EQ(cmd, (Args{"/b/cr_agent", "--coord", "head:99", "--job", "j1", "--node", "0",
                       "--token-stdin"}));
  auto none = agent_command({}, "node7", false, "/b/cr_agent", "head:99", "j1", 3);
  EXPECT_EQ(none, (Args{"/b/cr_agent", "--coord", "head:99", "--job", "j1", "--node", "3",
                        "--token-stdin"}));
}

TEST(AgentCommand, RemoteGoesThroughTheLauncherQuotedForTheShell) {
  auto cmd =
      agent_command({"ssh", "-x"}, "node2", false, "/opt/my crkit/cr_agent", "head:99", "j1", 2);
  EXPECT_EQ(cmd, (Args{"ssh", "-x", "node2", "'/opt/my crkit/cr_agent'", "--coord", "head:99",
                       "--job", "j1", "--node", "2", "--token-stdin"}));
}

TEST(LocalHost, NamesOfThisMachine) {
  EXPECT_TRUE(is_local_host("localhost", "head"));
  EXPECT_TRUE(is_local_host("127.0.0.1", "head"));
  EXPECT_TRUE(is_local_host("head", "head"));
  EXPECT_TRUE(is_local_host("head", "head.cluster"));
  EXPECT_TRUE(is_local_host("head.cluster", "head"));
  EXPECT_FALSE(is_local_host("head.a", "head.b"));
  EXPECT_FALSE(is_local_host("node1", "head"));
  EXPECT_FALSE(is_local_host("node1", ""));
  EXPECT_TRUE(is_local_host(own_hostname(), own_hostname()));
}

TEST(LoadHosts, HostfileOrHostsOrNothing) {
  JobOptions o;
  auto none = load_hosts(o);
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_TRUE(none->empty());

  const std::string dir = ::testing::TempDir();
  const std::string file = dir + "/mpi_tools_hostfile." + std::to_string(::getpid());
  {
    std::ofstream out(file);
    out << "# two nodes\nnode1:2\nnode2 slots=3\n";
  }
  o.hostfile = file;
  auto hf = load_hosts(o);
  std::filesystem::remove(file);
  ASSERT_TRUE(hf) << hf.error().message;
  ASSERT_EQ(hf->size(), 2u);
  EXPECT_EQ((*hf)[0].host, "node1");
  EXPECT_EQ((*hf)[0].slots, 2);
  EXPECT_EQ((*hf)[1].slots, 3);

  auto missing = load_hosts(o);  // the file is gone now
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_NE(missing.error().message.find(file), std::string::npos);

  o.hostfile.clear();
  o.hosts = {{"a", 1}};
  auto h = load_hosts(o);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->size(), 1u);
}

TEST(SpecJson, LaunchSpecHasEveryField) {
  JobSpec s;
  s.job = "j";
  s.nranks = 3;
  s.nodes = {{"n1", {0, 1}}, {"n2", {2}}};
  s.argv = {"./ring", "5"};
  s.env = {{"A", "1"}};
  s.cwd = "/w";
  s.checkpoint_dir = "/w/ck";
  s.keep = 2;
  s.interval = 30;
  s.nolocal = true;
  const coord::Json j = spec_json(s);
  const coord::Json want = coord::Json::parse(R"({
    "job":"j","nranks":3,
    "nodes":[{"host":"n1","ranks":[0,1]},{"host":"n2","ranks":[2]}],
    "argv":["./ring","5"],"env":{"A":"1"},"cwd":"/w","checkpoint_dir":"/w/ck",
    "keep":2,"interval":30,"nolocal":true,"restart":null,"pid_namespace":"auto"})");
  EXPECT_EQ(j, want) << j.dump();
}

TEST(SpecJson, RestartSpecNamesTheManifest) {
  JobSpec s;
  s.job = "r";
  s.nranks = 1;
  s.nodes = {{"n1", {0}}};
  s.restart_manifest = "/ck/j/snap-000002/manifest.json";
  s.pid_namespace_always = true;
  const coord::Json j = spec_json(s);
  EXPECT_EQ(j["restart"], (coord::Json{{"manifest", "/ck/j/snap-000002/manifest.json"}}));
  EXPECT_EQ(j["pid_namespace"], "always");
  EXPECT_EQ(j["nolocal"], false);
}

TEST(FindPrograms, SiblingsOfThisExecutable) {
  auto p = find_programs();
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->coordd, p->bindir + "/cr_coordd");
  EXPECT_EQ(p->agent, p->bindir + "/cr_agent");
  EXPECT_TRUE(std::filesystem::is_directory(p->bindir)) << p->bindir;
}

}  // namespace
}  // namespace crkit::mpi_tools
