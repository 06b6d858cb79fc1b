// The global snapshot manifest: JSON round trip, validation, atomic commit, reading a snapshot
// directory, and image checksums.
#include "snapshot/manifest.hpp"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <limits>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/cr_errors.hpp"
#include "coord_test_util.hpp"

namespace crkit::coord {
namespace {

using test::make_manifest;
using test::read_file;
using test::TempDir;
using test::write_file;
using ::testing::HasSubstr;

std::string hex64(uint64_t v) {
  return fmt::format("{:016x}", v);
}

// Writes each image of m into dir with distinct contents and records its real size and hash.
void write_images(const std::string& dir, Manifest& m) {
  for (auto& e : m.images) {
    std::string data = fmt::format("image of node {} ranks {}\n", e.node, e.ranks.size());
    data.append(1000 + 37 * static_cast<size_t>(e.node), static_cast<char>('a' + e.node));
    write_file(dir + "/" + e.path, data);
    e.size = data.size();
    e.xxh64 = hex64(XXH64(data.data(), data.size(), 0));
  }
}

Manifest full_manifest() {
  Manifest m = make_manifest({{0, 2}, {1, 3}});
  m.argv = {"./ring", "--iterations", "1000", "arg with spaces"};
  m.cwd = "/home/user/run";
  m.env = {{"OMP_NUM_THREADS", "2"}, {"PATH", "/usr/bin:/bin"}, {"EMPTY", ""}};
  m.mpi = "MPICH 4.0.2 ch3:nemesis:tcp";
  m.crkit_version = "0.1.0";
  m.nolocal = true;
  m.timings_ms = {{"quiesce", 12.5}, {"dump", 340.25}, {"commit", 0.1}};
  m.images[1].size = 1234567890123ull;
  m.images[1].xxh64 = "0123456789abcdef";
  return m;
}

// Writes text as DIR/manifest.json directly (to read back a manifest the writer would refuse).
void put_manifest(const std::string& dir, const std::string& text) {
  write_file(dir + "/manifest.json", text);
}

TEST(Manifest, RoundTrip) {
  const Manifest m = full_manifest();
  auto text = to_json(m);
  ASSERT_TRUE(text) << text.error().message;
  auto back = parse_manifest(*text, "test");
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, m);
  // And a second time: the encoding is stable.
  auto again = to_json(*back);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *text);
  EXPECT_THAT(*text, HasSubstr("\"nolocal\": true"));
  EXPECT_THAT(*text, HasSubstr("\"xxh64\": \"0123456789abcdef\""));
}

TEST(Manifest, OptionalFieldsAndUnknownKeys) {
  auto m = parse_manifest(R"({"format": 1, "seq": 7, "nranks": 1, "hosts": [],
      "images": [{"node": 0, "ranks": [0], "path": "a.img", "size": 5,
                  "xxh64": "EF46DB3751D8E999", "later": 1}],
      "added_later": {"x": 1}})",
                          "min");
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->seq, 7u);
  EXPECT_TRUE(m->job.empty());
  EXPECT_FALSE(m->nolocal);
  ASSERT_EQ(m->images.size(), 1u);
  EXPECT_EQ(m->images[0].xxh64, "ef46db3751d8e999");  // made lower case
}

TEST(Manifest, UnknownFormatRefused) {
  Manifest m = make_manifest({{0}});
  m.format = 2;
  auto text = to_json(m);
  ASSERT_TRUE(text);
  auto r = parse_manifest(*text, "snap/manifest.json");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, kCrEVersion);
  EXPECT_THAT(r.error().message, HasSubstr("snap/manifest.json: format: format 2"));
}

TEST(Manifest, FieldErrorsNameTheField) {
  struct Case {
    const char* json;
    const char* expect;
  };
  const Case cases[] = {
      {R"([1])", "expected a JSON object, found array"},
      {R"({"seq": 1})", "f: format: missing"},
      {R"({"format": 1, "seq": "3", "nranks": 1, "hosts": [], "images": []})",
       "f: seq: expected an unsigned integer, found string"},
      {R"({"format": 1, "seq": -3, "nranks": 1, "hosts": [], "images": []})",
       "f: seq: -3 is negative"},
      {R"({"format": 1, "seq": 1, "nranks": 0, "hosts": [], "images": []})",
       "f: nranks: 0 is not a positive count"},
      {R"({"format": 1, "seq": 1, "nranks": 1, "hosts": [],
           "images": [{"node": 0, "ranks": [0, "x"], "path": "a", "size": 1, "xxh64": ""}]})",
       "f: images[0].ranks[1]: expected an integer, found string"},
      {R"({"format": 1, "seq": 1, "nranks": 1, "hosts": [],
           "images": [{"node": 0, "ranks": [0], "size": 1, "xxh64": ""}]})",
       "f: images[0].path: missing"},
      {R"({"format": 1, "seq": 1, "nranks": 1, "hosts": [],
           "images": [{"node": 0, "ranks": [0], "path": "a", "size": 1, "xxh64": "xyz"}]})",
       "f: images[0].xxh64: 'xyz' is not 16 hex digits"},
      {R"({"format": 1, "seq": 1, "nranks": 1, "hosts": ["h"], "images": [{"node": 1,
           "ranks": [0], "path": "a", "size": 1, "xxh64": "ef46db3751d8e999"}]})",
       "f: images[0].node: node 1 is not in hosts (1 hosts listed)"},
      {R"({"format": 1, "seq": 1, "nranks": 2, "hosts": [], "images": [
           {"node": 0, "ranks": [0], "path": "a", "size": 1, "xxh64": "ef46db3751d8e999"},
           {"node": 1, "ranks": [1], "path": "a", "size": 1, "xxh64": "ef46db3751d8e999"}]})",
       "f: images[1].path: 'a' is also the path of images[0]"},
      {R"({"format": 1, "seq": 1, "nranks": 1, "hosts": [], "images": [], "env": {"A": 1}})",
       "f: env.A: expected a string, found number"},
  };
  for (const auto& c : cases) {
    auto r = parse_manifest(c.json, "f");
    ASSERT_FALSE(r) << c.json;
    EXPECT_EQ(r.error().code, EINVAL) << c.json;
    EXPECT_THAT(r.error().message, HasSubstr(c.expect)) << c.json;
  }
}

TEST(Manifest, NotUtf8CannotBeEncoded) {
  Manifest m = make_manifest({{0}});
  m.env["BAD"] = "\xff\xfe";
  auto r = to_json(m);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_THAT(r.error().message, HasSubstr("job42"));
}

TEST(Manifest, NonFiniteTimingRefused) {
  Manifest m = make_manifest({{0}});
  m.timings_ms["dump"] = std::numeric_limits<double>::quiet_NaN();
  auto st = validate_manifest(m, "v");
  ASSERT_FALSE(st);
  EXPECT_THAT(st.error().message, HasSubstr("v: timings_ms.dump: nan is not finite"));
  TempDir dir;
  EXPECT_FALSE(write_manifest_atomic(dir.path(), m));
  EXPECT_FALSE(test::exists_nofollow(dir / "manifest.json"));
}

TEST(Manifest, IsoTimestamp) {
  std::string t = iso8601_utc_now();
  ASSERT_EQ(t.size(), 20u) << t;
  EXPECT_EQ(t[4], '-');
  EXPECT_EQ(t[10], 'T');
  EXPECT_EQ(t.back(), 'Z');
}

TEST(ManifestWrite, AtomicNoTempFileMode0600) {
  TempDir dir;
  Manifest m = full_manifest();
  ASSERT_TRUE(write_manifest_atomic(dir.path(), m));
  EXPECT_FALSE(test::exists_nofollow(dir / ".manifest.json.tmp"));
  struct stat st {};
  ASSERT_EQ(::stat((dir / "manifest.json").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  auto back = parse_manifest(read_file(dir / "manifest.json"), "written");
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, m);

  // A second commit replaces the first atomically.
  m.timings_ms["commit"] = 2.0;
  ASSERT_TRUE(write_manifest_atomic(dir.path(), m));
  back = parse_manifest(read_file(dir / "manifest.json"), "rewritten");
  ASSERT_TRUE(back);
  EXPECT_EQ(back->timings_ms["commit"], 2.0);
  EXPECT_FALSE(test::exists_nofollow(dir / ".manifest.json.tmp"));
}

TEST(ManifestWrite, StaleTempFileRefused) {
  TempDir dir;
  write_file(dir / ".manifest.json.tmp", "half");
  auto st = write_manifest_atomic(dir.path(), make_manifest({{0}}));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EEXIST);
  EXPECT_THAT(st.error().message, HasSubstr(dir / ".manifest.json.tmp"));
  EXPECT_FALSE(test::exists_nofollow(dir / "manifest.json"));
  EXPECT_EQ(read_file(dir / ".manifest.json.tmp"), "half");  // not ours to remove
}

TEST(ManifestWrite, InvalidManifestNotWritten) {
  TempDir dir;
  Manifest m = make_manifest({{0, 1}, {1}});  // rank 1 twice
  auto st = write_manifest_atomic(dir.path(), m);
  ASSERT_FALSE(st);
  EXPECT_THAT(st.error().message, HasSubstr("rank 1 appears twice"));
  EXPECT_FALSE(test::exists_nofollow(dir / "manifest.json"));
  EXPECT_FALSE(test::exists_nofollow(dir / ".manifest.json.tmp"));
}

TEST(ManifestWrite, MissingDirectory) {
  TempDir dir;
  auto st = write_manifest_atomic(dir / "nope", make_manifest({{0}}));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ENOENT);
  EXPECT_THAT(st.error().message, HasSubstr(dir / "nope/.manifest.json.tmp"));
}

TEST(ReadManifest, DirectoryOrFile) {
  TempDir dir;
  Manifest m = full_manifest();
  write_images(dir.path(), m);
  ASSERT_TRUE(write_manifest_atomic(dir.path(), m));
  for (const std::string& p :
       std::vector<std::string>{dir.path(), dir.path() + "/", dir / "manifest.json"}) {
    auto r = read_manifest(p);
    ASSERT_TRUE(r) << p << ": " << r.error().message;
    EXPECT_EQ(*r, m) << p;
  }
}

TEST(ReadManifest, ImagesInSubdirectory) {
  TempDir dir;
  ASSERT_EQ(::mkdir((dir / "node0").c_str(), 0700), 0);
  Manifest m = make_manifest({{0}});
  m.images[0].path = "node0/./context.0";
  write_images(dir.path(), m);
  ASSERT_TRUE(write_manifest_atomic(dir.path(), m));
  auto r = read_manifest(dir.path());
  ASSERT_TRUE(r) << r.error().message;
}

// Writes m (invalid on purpose, so not through write_manifest_atomic) with its images and
// returns read_manifest's error.
Error read_error(const TempDir& dir, Manifest m) {
  write_images(dir.path(), m);
  auto text = to_json(m);
  EXPECT_TRUE(text);
  put_manifest(dir.path(), *text);
  auto r = read_manifest(dir.path());
  EXPECT_FALSE(r);
  return r ? Error{} : r.error();
}

TEST(ReadManifest, MissingRank) {
  TempDir dir;
  Manifest m = make_manifest({{0, 1}, {3}});
  m.nranks = 4;
  Error e = read_error(dir, m);
  EXPECT_EQ(e.code, EINVAL);
  EXPECT_THAT(e.message, HasSubstr(dir / "manifest.json: images: rank 2 is in no image"));
}

TEST(ReadManifest, DuplicateRank) {
  TempDir dir;
  Manifest m = make_manifest({{0, 1}, {2, 1}});
  m.nranks = 3;
  Error e = read_error(dir, m);
  EXPECT_THAT(e.message, HasSubstr(dir / "manifest.json: images[1].ranks[1]: rank 1 appears "
                                         "twice (also in images[0])"));
}

TEST(ReadManifest, RankOutOfRange) {
  TempDir dir;
  Manifest m = make_manifest({{0, 5}});
  Error e = read_error(dir, m);
  EXPECT_THAT(e.message, HasSubstr("images[0].ranks[1]: rank 5 is out of range 0..1"));
}

TEST(ReadManifest, BadPaths) {
  for (const std::string bad : {"../x", "a/../../x", "..", "/etc/passwd", "", "sub/"}) {
    TempDir dir;
    Manifest m = make_manifest({{0}});
    m.images[0].path = bad;
    auto text = to_json(m);
    ASSERT_TRUE(text);
    put_manifest(dir.path(), *text);
    auto r = read_manifest(dir.path());
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_THAT(r.error().message, HasSubstr(dir / "manifest.json: images[0].path: '" + bad))
        << bad;
  }
}

TEST(ReadManifest, SizeMismatch) {
  TempDir dir;
  Manifest m = make_manifest({{0}, {1}});
  write_images(dir.path(), m);
  m.images[1].size += 1;
  put_manifest(dir.path(), *to_json(m));
  auto r = read_manifest(dir.path());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_THAT(r.error().message, HasSubstr(dir / "manifest.json: images[1].size: image"));
  EXPECT_THAT(r.error().message, HasSubstr(dir / "node1.img"));
}

TEST(ReadManifest, MissingImage) {
  TempDir dir;
  Manifest m = make_manifest({{0}, {1}});
  write_images(dir.path(), m);
  ASSERT_TRUE(write_manifest_atomic(dir.path(), m));
  ASSERT_EQ(::unlink((dir / "node0.img").c_str()), 0);
  auto r = read_manifest(dir.path());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_THAT(r.error().message,
              HasSubstr(dir / "manifest.json: images[0].path: image " + dir / "node0.img"));
}

TEST(ReadManifest, BadJsonNamesTheFile) {
  TempDir dir;
  put_manifest(dir.path(), "{\"format\": 1,\n  \"seq\": }");
  auto r = read_manifest(dir.path());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_THAT(r.error().message, HasSubstr(dir / "manifest.json: invalid JSON: "));
  EXPECT_THAT(r.error().message, HasSubstr("line 2"));
}

TEST(ReadManifest, NoManifest) {
  TempDir dir;
  auto r = read_manifest(dir.path());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_THAT(r.error().message, HasSubstr(dir / "manifest.json"));
  r = read_manifest(dir / "missing");
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message, HasSubstr(dir / "missing"));
}

TEST(Xxh64, PublishedVectors) {
  TempDir dir;
  write_file(dir / "empty", "");
  auto h = xxh64_file(dir / "empty");
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(*h, "ef46db3751d8e999");  // XXH64("", 0), the reference test vector
  write_file(dir / "abc", "abc");
  h = xxh64_file(dir / "abc");
  ASSERT_TRUE(h);
  EXPECT_EQ(*h, "44bc2cf5ad770999");  // XXH64("abc", 0)
}

TEST(Xxh64, MultiChunkFileMatchesOneShot) {
  TempDir dir;
  std::string data;
  data.reserve((3u << 20) + 17);
  uint32_t x = 12345;
  for (size_t i = 0; i < (3u << 20) + 17; ++i) {
    x = x * 1103515245u + 12345u;
    data.push_back(static_cast<char>(x >> 24));
  }
  write_file(dir / "big", data);
  auto h = xxh64_file(dir / "big");
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(*h, hex64(XXH64(data.data(), data.size(), 0)));
}

TEST(Xxh64, MissingFile) {
  TempDir dir;
  auto h = xxh64_file(dir / "nope");
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, ENOENT);
  EXPECT_THAT(h.error().message, HasSubstr(dir / "nope"));
}

TEST(VerifyImages, GoodAndCorrupted) {
  TempDir dir;
  Manifest m = make_manifest({{0, 1}, {2, 3}, {4}});
  write_images(dir.path(), m);
  ASSERT_TRUE(write_manifest_atomic(dir.path(), m));
  auto st = verify_images(dir.path(), m);
  ASSERT_TRUE(st) << st.error().message;

  // Flip one byte of node1.img: same size, other hash.
  std::string data = read_file(dir / "node1.img");
  data[data.size() / 2] ^= 0x01;
  write_file(dir / "node1.img", data);
  ASSERT_TRUE(read_manifest(dir.path()));  // sizes still match
  st = verify_images(dir.path(), m);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EIO);
  EXPECT_THAT(st.error().message, HasSubstr("image node1.img (node 1 n1, ranks 2,3)"));
  EXPECT_THAT(st.error().message, HasSubstr("the manifest records " + m.images[1].xxh64));

  // Truncate node2.img: the size check reports it, before any hash is read.
  write_file(dir / "node2.img", "short");
  st = verify_images(dir.path(), m);
  ASSERT_FALSE(st);
  EXPECT_THAT(st.error().message, HasSubstr("image node2.img (node 2 n2, ranks 4)"));
  EXPECT_THAT(st.error().message, HasSubstr("has 5 bytes"));
}

}  // namespace
}  // namespace crkit::coord
