// protocol/token: the coordinator's shared secret — how it is made, compared, and read from a
// file or a pipe, and which files are refused.
#include "protocol/token.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

namespace {

using crkit::coord::check_token;
using crkit::coord::new_token;
using crkit::coord::read_token_file;
using crkit::coord::read_token_line;
using crkit::coord::token_equal;

class TokenFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/crkit-token-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST(Token, NewTokensAre64HexDigitsAndDiffer) {
  std::set<std::string> seen;
  for (int i = 0; i < 50; ++i) {
    auto t = new_token();
    ASSERT_TRUE(t);
    ASSERT_EQ(t->size(), 64u);
    EXPECT_EQ(t->find_first_not_of("0123456789abcdef"), std::string::npos) << *t;
    EXPECT_TRUE(check_token(*t, "t"));
    seen.insert(*t);
  }
  EXPECT_EQ(seen.size(), 50u);
}

TEST(Token, EqualOnlyWhenIdentical) {
  EXPECT_TRUE(token_equal("0123456789abcdef", "0123456789abcdef"));
  EXPECT_FALSE(token_equal("0123456789abcdef", "0123456789abcdeF"));
  EXPECT_FALSE(token_equal("0123456789abcdef", "0123456789abcde"));
  EXPECT_FALSE(token_equal("0123456789abcdef", "0123456789abcdef0"));
  EXPECT_FALSE(token_equal("", "0123456789abcdef"));
  EXPECT_TRUE(token_equal("", ""));
}

TEST(Token, CheckNamesTheSourceAndTheRule) {
  auto short_one = check_token("abc", "the token file /x");
  ASSERT_FALSE(short_one);
  EXPECT_EQ(short_one.error().code, EINVAL);
  EXPECT_NE(short_one.error().message.find("the token file /x"), std::string::npos);
  EXPECT_NE(short_one.error().message.find("16 to 256"), std::string::npos);
  EXPECT_FALSE(check_token("0123456789 abcdef", "t"));
  EXPECT_FALSE(check_token(std::string(257, 'a'), "t"));
}

TEST_F(TokenFile, CreatedPrivateWhenMissingThenReadBack) {
  const std::string path = dir_ + "/token";
  auto made = read_token_file(path, true);
  ASSERT_TRUE(made) << made.error().message;
  struct stat sb {};
  ASSERT_EQ(::stat(path.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  auto again = read_token_file(path, true);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *made);
  EXPECT_FALSE(read_token_file(dir_ + "/none", false));
}

TEST_F(TokenFile, RefusedWhenOthersCanReadItOrItIsNotAFile) {
  const std::string path = dir_ + "/token";
  ASSERT_TRUE(read_token_file(path, true));
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  auto r = read_token_file(path, false);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EACCES);
  EXPECT_NE(r.error().message.find(path), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("0640"), std::string::npos) << r.error().message;
  ASSERT_EQ(::symlink(path.c_str(), (dir_ + "/link").c_str()), 0);
  EXPECT_FALSE(read_token_file(dir_ + "/link", false));  // O_NOFOLLOW
  auto d = read_token_file(dir_, false);
  ASSERT_FALSE(d);
}

TEST_F(TokenFile, FirstLineOnlyAndItMustBeAToken) {
  const std::string path = dir_ + "/token";
  {
    std::ofstream out(path);
    out << "0123456789abcdef0123\r\nsecond line\n";
  }
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  auto r = read_token_file(path, false);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "0123456789abcdef0123");
  {
    std::ofstream out(path, std::ios::trunc);
    out << "short\n";
  }
  EXPECT_FALSE(read_token_file(path, false));
}

TEST_F(TokenFile, ClientTokenFromTheFileElseTheEnvironmentWhichItClears) {
  using crkit::coord::client_token;
  const std::string path = dir_ + "/token";
  auto made = read_token_file(path, true);
  ASSERT_TRUE(made);
  ::setenv("CRKIT_COORD_TOKEN", "fromtheenvironment01", 1);
  auto f = client_token(path, "head:1");  // the file wins
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_EQ(*f, *made);
  auto e = client_token("", "head:1");
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_EQ(*e, "fromtheenvironment01");
  EXPECT_EQ(std::getenv("CRKIT_COORD_TOKEN"), nullptr);  // children do not inherit it
  auto none = client_token("", "head:1");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, EINVAL);
  EXPECT_NE(none.error().message.find("head:1"), std::string::npos) << none.error().message;
  EXPECT_NE(none.error().message.find("--token-file"), std::string::npos);
  ::setenv("CRKIT_COORD_TOKEN", "short", 1);
  EXPECT_FALSE(client_token("", "head:1"));
}

TEST(TokenLine, FromAPipeAndTimesOutWhenNothingComes) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const std::string text = "fedcba9876543210fedc\n";
  ASSERT_EQ(::write(p[1], text.data(), text.size()), static_cast<ssize_t>(text.size()));
  auto t = read_token_line(p[0], 2000, "stdin");
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(*t, "fedcba9876543210fedc");
  auto none = read_token_line(p[0], 200, "cr_agent --token-stdin");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ETIMEDOUT);
  EXPECT_NE(none.error().message.find("cr_agent --token-stdin"), std::string::npos);
  ::close(p[1]);
  auto eof = read_token_line(p[0], 200, "stdin");  // closed without a token
  ASSERT_FALSE(eof);
  EXPECT_EQ(eof.error().code, EINVAL);
  ::close(p[0]);
}

}  // namespace
