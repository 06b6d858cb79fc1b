// The job registry that cr_mpirun writes and cr_snapshot reads.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tools/job_registry.hpp"

namespace crkit::mpi_tools {
namespace {

// A fresh directory, removed with everything in it at the end; the run dir goes inside it.
class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = ::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/crkit-registry-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    top_ = tmpl;
    run_ = top_ + "/run";
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(top_, ec);
  }
  static mode_t mode_of(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  }
  JobRecord record(const std::string& job, pid_t pid) const {
    return JobRecord{job, "head:4711", pid, "/ck", "2026-12-03T08:00:00Z", "0123456789abcdef0123"};
  }

  std::string top_, run_;
};

TEST_F(RegistryTest, WriteReadRemove) {
  const JobRecord r = record("1234", ::getpid());
  ASSERT_TRUE(write_job_record(run_, r));
  EXPECT_EQ(mode_of(run_), 0700u);
  EXPECT_EQ(mode_of(run_ + "/jobs"), 0700u);
  const std::string path = record_path(run_, "1234");
  EXPECT_EQ(path, run_ + "/jobs/1234.json");
  EXPECT_EQ(mode_of(path), 0600u);
  auto back = read_job_record(run_, "1234");
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, r);
  EXPECT_TRUE(record_owner_alive(*back));
  // Only the record file is there: no temporary file is left behind.
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(run_ + "/jobs")) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);

  ASSERT_TRUE(remove_job_record(run_, "1234", ::getpid()));
  auto gone = read_job_record(run_, "1234");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ESRCH);
  EXPECT_NE(gone.error().message.find("--coord"), std::string::npos) << gone.error().message;
  EXPECT_TRUE(remove_job_record(run_, "1234", ::getpid()));  // already gone: fine
}

TEST_F(RegistryTest, RecordIsJsonWithTheDocumentedKeys) {
  ASSERT_TRUE(write_job_record(run_, record("j", 42)));
  std::ifstream in(record_path(run_, "j"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text,
            "{\"checkpoint_dir\":\"/ck\",\"coord\":\"head:4711\",\"job\":\"j\",\"pid\":42,"
            "\"started\":\"2026-12-03T08:00:00Z\",\"token\":\"0123456789abcdef0123\"}\n");
  struct stat sb {};
  ASSERT_EQ(::stat(record_path(run_, "j").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);  // it holds the coordinator's token
}

// A record tells cr_snapshot where to send the token: one others could read or have written
// is not believed.
TEST_F(RegistryTest, ReadRefusesARecordOthersCanReadOrADirectoryOthersCanWrite) {
  ASSERT_TRUE(write_job_record(run_, record("j", ::getpid())));
  ASSERT_EQ(::chmod(record_path(run_, "j").c_str(), 0644), 0);
  auto r = read_job_record(run_, "j");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EACCES);
  EXPECT_NE(r.error().message.find("not private"), std::string::npos) << r.error().message;
  ASSERT_EQ(::chmod(record_path(run_, "j").c_str(), 0600), 0);
  ASSERT_TRUE(read_job_record(run_, "j"));
  ASSERT_EQ(::chmod((run_ + "/jobs").c_str(), 0777), 0);
  r = read_job_record(run_, "j");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EACCES);
  EXPECT_NE(r.error().message.find(run_ + "/jobs"), std::string::npos) << r.error().message;
  ASSERT_EQ(::chmod((run_ + "/jobs").c_str(), 0700), 0);
}

TEST_F(RegistryTest, RewriteReplacesAndRemoveSparesAnotherOwner) {
  ASSERT_TRUE(write_job_record(run_, record("j", 100)));
  ASSERT_TRUE(write_job_record(run_, record("j", 200)));
  auto r = read_job_record(run_, "j");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->pid, 200);
  ASSERT_TRUE(remove_job_record(run_, "j", 100));  // not 100's record any more
  ASSERT_TRUE(read_job_record(run_, "j"));
  ASSERT_TRUE(remove_job_record(run_, "j", 200));
  EXPECT_FALSE(read_job_record(run_, "j"));
}

TEST_F(RegistryTest, RefusesADirectoryOthersCanWrite) {
  ASSERT_EQ(::mkdir(run_.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(run_.c_str(), 0777), 0);
  auto st = write_job_record(run_, record("j", 1));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EACCES);
  EXPECT_NE(st.error().message.find("writable by others"), std::string::npos) << st.error().message;
}

TEST_F(RegistryTest, RefusesASymlinkedJobsDirectory) {
  ASSERT_EQ(::mkdir(run_.c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((top_ + "/elsewhere").c_str(), 0700), 0);
  ASSERT_EQ(::symlink((top_ + "/elsewhere").c_str(), (run_ + "/jobs").c_str()), 0);
  auto st = write_job_record(run_, record("j", 1));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ENOTDIR);
}

TEST_F(RegistryTest, BadRecordsAreNamed) {
  ASSERT_TRUE(write_job_record(run_, record("j", 1)));
  {
    std::ofstream out(record_path(run_, "j"), std::ios::trunc);
    out << "{\"job\":\"j\",\"coord\":\"h:1\"}";
  }
  auto r = read_job_record(run_, "j");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_NE(r.error().message.find("checkpoint_dir"), std::string::npos) << r.error().message;
  {
    std::ofstream out(record_path(run_, "j"), std::ios::trunc);
    out << "not json";
  }
  r = read_job_record(run_, "j");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find(record_path(run_, "j")), std::string::npos);
}

TEST_F(RegistryTest, JobNamesThatAreNotFileNamesAreRefused) {
  for (const char* bad : {"", "a/b", "..", ".x", "-x", "a b", "x\n"}) {
    EXPECT_FALSE(check_job_name(bad)) << "'" << bad << "'";
    EXPECT_FALSE(write_job_record(run_, record(bad, 1))) << "'" << bad << "'";
    EXPECT_FALSE(read_job_record(run_, bad)) << "'" << bad << "'";
  }
  EXPECT_FALSE(check_job_name(std::string(65, 'a')));
  for (const std::string& good :
       {std::string("1234"), std::string("job-1.a_B"), std::string(64, 'z')})
    EXPECT_TRUE(check_job_name(good)) << good;
}

TEST_F(RegistryTest, StaleRecordOfAnEndedProcess) {
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  int st;
  ASSERT_EQ(::waitpid(child, &st, 0), child);
  EXPECT_FALSE(record_owner_alive(record("j", child)));
  EXPECT_TRUE(record_owner_alive(record("j", ::getpid())));
}

TEST(RunDir, EnvironmentOrTmp) {
  const char* old = ::getenv("CRKIT_RUN_DIR");
  const std::string saved = old ? old : "";
  ::setenv("CRKIT_RUN_DIR", "/some/where", 1);
  EXPECT_EQ(default_run_dir(), "/some/where");
  ::setenv("CRKIT_RUN_DIR", "", 1);
  EXPECT_EQ(default_run_dir(), "/tmp/crkit-" + std::to_string(::getuid()));
  ::unsetenv("CRKIT_RUN_DIR");
  EXPECT_EQ(default_run_dir(), "/tmp/crkit-" + std::to_string(::getuid()));
  if (old) ::setenv("CRKIT_RUN_DIR", saved.c_str(), 1);
}

}  // namespace
}  // namespace crkit::mpi_tools
