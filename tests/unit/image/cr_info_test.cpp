// Runs the built cr_info binary on images written by the test.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "image_test_util.hpp"

#ifndef CRKIT_CR_INFO_PATH
#error "CRKIT_CR_INFO_PATH must name the cr_info binary"
#endif

namespace crkit::image {
namespace {

using namespace crkit::image::testing;
using nlohmann::json;

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

std::string slurp(int fd) {
  std::vector<uint8_t> b = read_fd_all(fd);
  return std::string(b.begin(), b.end());
}

// Runs cr_info with args; stdin_fd (if >= 0) becomes its standard input.
RunResult run_cr_info(const std::vector<std::string>& args, int stdin_fd = -1) {
  RunResult res;
  UniqueFd out(memfd_create("out", MFD_CLOEXEC)), err(memfd_create("err", MFD_CLOEXEC));
  std::vector<std::string> argv_s = {CRKIT_CR_INFO_PATH};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    if (stdin_fd >= 0) dup2(stdin_fd, 0);
    dup2(out.get(), 1);
    dup2(err.get(), 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  EXPECT_GT(pid, 0);
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status)) << "status " << status;
  res.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  res.out = slurp(out.get());
  res.err = slurp(err.get());
  return res;
}

class CrInfoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "crkit-crinfo-XXXXXX";
    UniqueFd fd(mkstemp(path_.data()));
    ASSERT_TRUE(fd.valid());
    layout_ = {};
    ImageWriter w(fd.get(), path_);
    Status s = write_sample(w, &layout_);
    ASSERT_TRUE(s.ok()) << s.error().message;
    bytes_ = read_fd_all(fd.get());
  }
  void TearDown() override { ::unlink(path_.c_str()); }

  // Writes bytes to a new temp file and returns its path (removed at TearDown of the process).
  std::string write_temp(const std::vector<uint8_t>& b) {
    std::string p = ::testing::TempDir() + "crkit-crinfo-bad-XXXXXX";
    UniqueFd fd(mkstemp(p.data()));
    EXPECT_TRUE(fd.valid());
    EXPECT_EQ(::write(fd.get(), b.data(), b.size()), static_cast<ssize_t>(b.size()));
    extra_.push_back(p);
    return p;
  }
  ~CrInfoTest() override {
    for (auto& p : extra_) ::unlink(p.c_str());
  }

  std::string path_;
  Layout layout_;
  std::vector<uint8_t> bytes_;
  std::vector<std::string> extra_;
};

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}
#define EXPECT_CONTAINS(s, needle) EXPECT_PRED2(contains, s, needle)

TEST_F(CrInfoTest, TextOutput) {
  RunResult r = run_cr_info({path_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_CONTAINS(r.out, "format version 3");
  EXPECT_CONTAINS(r.out, "node-17.example");
  EXPECT_CONTAINS(r.out, "6.1.0-18-amd64");
  EXPECT_CONTAINS(r.out, "2023-11-14 22:13:20 UTC");
  EXPECT_CONTAINS(r.out, "page size:    4096");
  EXPECT_CONTAINS(r.out, "Process 4242 (sleeper)");
  EXPECT_CONTAINS(r.out, "/usr/bin/sleeper");
  EXPECT_CONTAINS(r.out, "/home/user/work dir");
  EXPECT_CONTAINS(r.out, "uid/gid:    1000/2000");
  EXPECT_CONTAINS(r.out, "stopped:    yes");
  EXPECT_CONTAINS(r.out, "SIGINT");
  EXPECT_CONTAINS(r.out, "handler 0x401000");
  EXPECT_CONTAINS(r.out, "SIGPIPE");
  EXPECT_CONTAINS(r.out, "SIG_IGN");
  EXPECT_CONTAINS(r.out, "ITIMER_REAL");
  EXPECT_CONTAINS(r.out, "ITIMER_PROF");
  EXPECT_FALSE(contains(r.out, "ITIMER_VIRTUAL"));
  EXPECT_CONTAINS(r.out, "0x401234");  // rip of thread 4242
  EXPECT_CONTAINS(r.out, "0x401235");  // rip of thread 4243
  EXPECT_CONTAINS(r.out, "0x7ffffffdd000");
  EXPECT_CONTAINS(r.out, "14,35");  // pending signals
  EXPECT_CONTAINS(r.out, "0x7ffff7d8b060/32/0x53053053");
  EXPECT_CONTAINS(r.out, "0000555555554000-0000555555556000");
  EXPECT_CONTAINS(r.out, "r-xp");
  EXPECT_CONTAINS(r.out, "file-private");
  EXPECT_CONTAINS(r.out, "[heap]");
  EXPECT_CONTAINS(r.out, "saved memory: 5 pages, 20.0 KiB");
  EXPECT_CONTAINS(r.out, "unlinked");
  EXPECT_CONTAINS(r.out, "rdwr|append|cloexec");
  EXPECT_CONTAINS(r.out, "/tmp/scratch.dat");
  EXPECT_CONTAINS(r.out, "12345");
}

TEST_F(CrInfoTest, JsonOutput) {
  RunResult r = run_cr_info({"--json", path_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["format_version"], 3);
  EXPECT_EQ(j["image_bytes"], bytes_.size());
  EXPECT_EQ(j["records"], 10);
  EXPECT_EQ(j["info"]["hostname"], "node-17.example");
  EXPECT_EQ(j["info"]["page_size"], 4096);
  EXPECT_EQ(j["info"]["created_unix"], 1700000000);
  EXPECT_EQ(j["info"]["xfeatures"], "0x2e7");
  EXPECT_EQ(j["info"]["target"], 4242);

  ASSERT_EQ(j["processes"].size(), 1u);
  const json& p = j["processes"][0];
  EXPECT_EQ(p["pid"], 4242);
  EXPECT_EQ(p["ppid"], 1);
  EXPECT_EQ(p["sid"], 1000);
  EXPECT_EQ(p["comm"], "sleeper");
  EXPECT_EQ(p["exe"], "/usr/bin/sleeper");
  EXPECT_EQ(p["uid"], 1000);
  EXPECT_EQ(p["thread_count"], 2);
  EXPECT_EQ(p["was_stopped"], true);
  ASSERT_EQ(p["signal_handlers"].size(), 2u);
  EXPECT_EQ(p["signal_handlers"][0]["signal"], 2);
  EXPECT_EQ(p["signal_handlers"][0]["handler"], "0x401000");
  EXPECT_EQ(p["signal_handlers"][1]["handler"], "SIG_IGN");
  ASSERT_EQ(p["itimers"].size(), 2u);
  EXPECT_EQ(p["itimers"][0]["which"], "ITIMER_REAL");
  EXPECT_EQ(p["itimers"][0]["value_usec"], 250000);
  EXPECT_EQ(p["saved_pages"], 5);
  EXPECT_EQ(p["saved_bytes"], 5 * 4096);

  ASSERT_EQ(j["threads"].size(), 2u);
  const json& t = j["threads"][1];
  EXPECT_EQ(t["tid"], 4243);
  EXPECT_EQ(t["pid"], 4242);
  EXPECT_EQ(t["rip"], "0x401235");
  EXPECT_EQ(t["rsp"], "0x7ffffffdd000");
  EXPECT_EQ(t["sigmask"], "0x4000000000010000");
  EXPECT_EQ(t["pending"], json::array({14, 35}));
  EXPECT_EQ(t["rseq"]["addr"], "0x7ffff7d8b060");
  EXPECT_EQ(t["rseq"]["len"], 32);
  EXPECT_EQ(t["altstack"]["size"], 16384);

  ASSERT_EQ(j["vmas"].size(), 2u);
  EXPECT_EQ(j["vmas"][0]["start"], "0x555555554000");
  EXPECT_EQ(j["vmas"][0]["end"], "0x555555556000");
  EXPECT_EQ(j["vmas"][0]["perms"], "r-xp");
  EXPECT_EQ(j["vmas"][0]["kind"], "file-private");
  EXPECT_EQ(j["vmas"][0]["saved_pages"], 2);
  EXPECT_EQ(j["vmas"][0]["pages_in_image"], 2);
  EXPECT_EQ(j["vmas"][0]["bytes_in_image"], 2 * 4096);
  EXPECT_EQ(j["vmas"][1]["name"], "[heap]");
  EXPECT_EQ(j["vmas"][1]["saved_pages"], 5);
  EXPECT_EQ(j["vmas"][1]["pages_in_image"], 3);
  EXPECT_EQ(j["vmas"][1]["kind"], "heap");

  ASSERT_EQ(j["fds"].size(), 1u);
  EXPECT_EQ(j["fds"][0]["fd"], 3);
  EXPECT_EQ(j["fds"][0]["kind"], "unlinked");
  EXPECT_EQ(j["fds"][0]["pos"], 12345);
  EXPECT_EQ(j["fds"][0]["path"], "/tmp/scratch.dat");
  EXPECT_EQ(j["fds"][0]["content_bytes"], 300);

  EXPECT_EQ(j["saved_pages"], 5);
  EXPECT_EQ(j["saved_bytes"], 5 * 4096);
}

// Names from the checkpointed system need not be UTF-8; the JSON stays valid.
TEST_F(CrInfoTest, JsonWithNonUtf8Names) {
  UniqueFd fd(memfd_create("t", MFD_CLOEXEC));
  ImageWriter w(fd.get(), "t");
  ProcessRecord p = sample_process();
  p.comm = "bad\xff\xfename";
  ASSERT_TRUE(w.write_file_header().ok());
  ASSERT_TRUE(w.write(sample_info()).ok());
  ASSERT_TRUE(w.write(p).ok());
  ASSERT_TRUE(w.finish().ok());
  std::string path = write_temp(read_fd_all(fd.get()));
  RunResult r = run_cr_info({"--json", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["processes"][0]["pid"], 4242);
  EXPECT_EQ(j["threads"].size(), 0u);
}

TEST_F(CrInfoTest, ReadsStandardInputAndFd) {
  UniqueFd in(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(in.valid());
  RunResult r = run_cr_info({"--json", "-"}, in.get());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["processes"][0]["pid"], 4242);

  UniqueFd in2(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  RunResult r2 = run_cr_info({"-F", "0"}, in2.get());
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_CONTAINS(r2.out, "Process 4242");
}

TEST_F(CrInfoTest, QuietPrintsNothing) {
  RunResult r = run_cr_info({"-q", path_});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "");
}

TEST_F(CrInfoTest, CorruptedImageExitsWithEio) {
  std::vector<uint8_t> bad = bytes_;
  const auto& thread = layout_.records[2];
  ASSERT_EQ(thread.type, RecordType::Thread);
  bad[thread.offset + kRecordHeaderSize + 100] ^= 0x40;
  std::string p = write_temp(bad);
  for (bool js : {false, true}) {
    RunResult r = js ? run_cr_info({"--json", p}) : run_cr_info({p});
    EXPECT_EQ(r.exit_code, 5);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err, fmt::format("cr_info: {}: record #2 (Thread) at offset {}: checksum mismatch "
                                 "(corrupted image)\n",
                                 p, thread.offset));
  }
}

TEST_F(CrInfoTest, TruncatedImageExitsWithEio) {
  std::vector<uint8_t> cut(bytes_.begin(), bytes_.begin() + bytes_.size() - 10);
  RunResult r = run_cr_info({"-q", write_temp(cut)});
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_CONTAINS(r.err, "cr_info: ");
  EXPECT_CONTAINS(r.err, "truncated image");
}

TEST_F(CrInfoTest, NotAnImageExitsWithEinval) {
  std::vector<uint8_t> bad = bytes_;
  bad[0] = 'x';
  RunResult r = run_cr_info({write_temp(bad)});
  EXPECT_EQ(r.exit_code, 22);
  EXPECT_CONTAINS(r.err, "not a crkit image (bad magic)");
}

TEST_F(CrInfoTest, MissingFile) {
  RunResult r = run_cr_info({"/nonexistent/crkit/context.1"});
  EXPECT_EQ(r.exit_code, ENOENT);
  EXPECT_CONTAINS(r.err, "cr_info: cannot open /nonexistent/crkit/context.1");
}

TEST(CrInfo, VersionAndHelp) {
  RunResult v = run_cr_info({"--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.out, "cr_info (crkit) 0.1.0\n");
  RunResult h = run_cr_info({"--help"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_CONTAINS(h.out, "Usage: cr_info");
  RunResult h2 = run_cr_info({"-h"});
  EXPECT_EQ(h2.exit_code, 0);
}

TEST(CrInfo, UsageErrors) {
  RunResult none = run_cr_info({});
  EXPECT_EQ(none.exit_code, 22);
  EXPECT_CONTAINS(none.err, "cr_info: ");
  RunResult bad = run_cr_info({"--bogus", "x"});
  EXPECT_EQ(bad.exit_code, 22);
  EXPECT_CONTAINS(bad.err, "--bogus");
  RunResult badfd = run_cr_info({"-F", "abc"});
  EXPECT_EQ(badfd.exit_code, 22);
  RunResult both = run_cr_info({"-F", "0", "file"});
  EXPECT_EQ(both.exit_code, 22);
}

}  // namespace
}  // namespace crkit::image
