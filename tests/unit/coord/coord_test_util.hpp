// Helpers of the coord unit tests: a temporary directory and small file utilities.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "snapshot/manifest.hpp"

namespace crkit::coord::test {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    const char* base = ::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/crkit-coord-test.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp " << tmpl << " failed";
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(out) << "cannot create " << path;
  out << data;
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline bool exists_nofollow(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// A valid manifest: one image per entry of ranks_per_node, named node<i>.img, on host n<i>;
// sizes and hashes are placeholders (see write_images for real ones).
inline Manifest make_manifest(const std::vector<std::vector<int>>& ranks_per_node) {
  Manifest m;
  m.job = "job42";
  m.seq = 3;
  m.created = "2024-05-01T12:34:56Z";
  for (size_t i = 0; i < ranks_per_node.size(); ++i) {
    m.hosts.push_back("n" + std::to_string(i));
    ImageEntry e;
    e.node = static_cast<int>(i);
    e.host = m.hosts.back();
    e.ranks = ranks_per_node[i];
    e.path = "node" + std::to_string(i) + ".img";
    e.size = 0;
    e.xxh64 = "ef46db3751d8e999";
    m.nranks += static_cast<int>(e.ranks.size());
    m.images.push_back(std::move(e));
  }
  return m;
}

}  // namespace crkit::coord::test
