// Tests of the page compression codec (page_codec.hpp): --compress parsing, lossless round
// trips of the data kinds real memory holds, "not smaller" results, and refusal of damaged data.
#include "image/page_codec.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "image_test_util.hpp"

namespace crkit::image {
namespace {

using testing::pattern;

constexpr size_t kChunk = 4u << 20;  // the pipeline's batch size

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}
#define EXPECT_CONTAINS(s, needle) EXPECT_PRED2(contains, s, needle)

// ---- data kinds --------------------------------------------------------------------------

// Words, numbers and line breaks: compresses like heaps of strings and program text.
std::vector<uint8_t> text_like(size_t n, uint32_t seed) {
  static const char* const kWords[] = {"checkpoint", "restart", "process ", "memory", "the ",
                                       "of ",        "page",    "\n",       "thread", "image ",
                                       "0x7ffe",     "= ",      "42",       "signal", "; "};
  std::vector<uint8_t> v;
  v.reserve(n);
  const std::vector<uint8_t> r = pattern(n / 4 + 16, seed);
  for (size_t i = 0; v.size() < n; ++i) {
    const std::string w = kWords[r[i % r.size()] % std::size(kWords)];
    for (char c : w) {
      if (v.size() == n) break;
      v.push_back(static_cast<uint8_t>(c));
    }
  }
  return v;
}

// 64 KiB blocks of random, text and zero data in turn.
std::vector<uint8_t> mixed(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n, 0);
  const std::vector<uint8_t> rnd = pattern(n, seed);
  const std::vector<uint8_t> txt = text_like(n, seed + 1);
  constexpr size_t kBlock = 64 << 10;
  for (size_t off = 0, k = 0; off < n; off += kBlock, ++k) {
    const size_t len = std::min(kBlock, n - off);
    if (k % 3 == 0) std::copy_n(rnd.begin() + off, len, v.begin() + off);
    if (k % 3 == 1) std::copy_n(txt.begin() + off, len, v.begin() + off);
  }
  return v;
}

CompressionSpec spec(std::string_view text) {
  auto s = parse_compression(text);
  EXPECT_TRUE(s.ok()) << text;
  return s.ok() ? *s : CompressionSpec{};
}

// Compresses src; returns the compressed bytes (empty when the codec said "not smaller").
std::vector<uint8_t> compress(PageCompressor& c, const std::vector<uint8_t>& src) {
  std::vector<uint8_t> dst(c.bound(src.size()));
  auto n = c.compress(src, dst);
  EXPECT_TRUE(n.ok()) << (n.ok() ? "" : n.error().message);
  if (!n.ok()) return {};
  EXPECT_LT(*n, src.size());  // 0 or smaller than the input, never larger
  dst.resize(*n);
  return dst;
}

// ---- parse_compression / to_string -------------------------------------------------------

TEST(ParseCompression, RoundTrip) {
  for (const char* text : {"none", "lz4", "zstd", "zstd:1", "zstd:3", "zstd:19"}) {
    auto s = parse_compression(text);
    ASSERT_TRUE(s.ok()) << text << ": " << s.error().message;
    EXPECT_EQ(to_string(*s), text);
    auto again = parse_compression(to_string(*s));
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *s);
  }
  EXPECT_EQ(spec("none"), (CompressionSpec{Compression::None, 0}));
  EXPECT_EQ(spec("lz4"), (CompressionSpec{Compression::Lz4, 0}));
  EXPECT_EQ(spec("zstd"), (CompressionSpec{Compression::Zstd, 0}));
  EXPECT_EQ(spec("zstd:7"), (CompressionSpec{Compression::Zstd, 7}));
  EXPECT_STREQ(compression_name(Compression::None), "none");
  EXPECT_STREQ(compression_name(Compression::Lz4), "lz4");
  EXPECT_STREQ(compression_name(Compression::Zstd), "zstd");
}

TEST(ParseCompression, ErrorsNameTheText) {
  for (const char* text :
       {"", "gzip", "LZ4", " lz4", "lz4 ", "none:1", "zstd:", "zstd:abc", "zstd:0", "zstd:20",
        "zstd:-1", "zstd:3x", "zstd:+3", "zstd:99999999999"}) {
    auto s = parse_compression(text);
    ASSERT_FALSE(s.ok()) << "'" << text << "' was accepted";
    EXPECT_EQ(s.error().code, EINVAL) << text;
    EXPECT_CONTAINS(s.error().message, "--compress=" + std::string(text) + ":");
  }
}

// ---- round trips -------------------------------------------------------------------------

struct Kind {
  const char* name;
  std::vector<uint8_t> data;
  bool compressible;
};

std::vector<Kind> kinds() {
  return {{"random", pattern(kChunk, 1), false},
          {"text", text_like(kChunk, 2), true},
          {"zero", std::vector<uint8_t>(kChunk, 0), true},
          {"mixed", mixed(kChunk, 3), true}};
}

TEST(PageCodec, RoundTrip4MiB) {
  const std::vector<Kind> ks = kinds();
  PageDecompressor dec;
  for (const char* codec : {"lz4", "zstd", "zstd:3"}) {
    PageCompressor comp(spec(codec));
    for (const auto& k : ks) {
      SCOPED_TRACE(std::string(codec) + " " + k.name);
      const std::vector<uint8_t> z = compress(comp, k.data);
      if (!k.compressible) {
        EXPECT_TRUE(z.empty()) << "random data 'compressed' to " << z.size() << " bytes";
        continue;
      }
      ASSERT_FALSE(z.empty());
      if (std::string(k.name) == "zero") {
        EXPECT_LT(z.size(), k.data.size() / 100);
      }
      std::vector<uint8_t> out(k.data.size(), 0xa5);
      Status s = dec.decompress(comp.spec().kind, z, out);
      ASSERT_TRUE(s.ok()) << s.error().message;
      EXPECT_TRUE(out == k.data);
    }
  }
}

TEST(PageCodec, Zstd19SmallBuffer) {
  const std::vector<uint8_t> src = mixed(256 << 10, 4);
  PageCompressor comp(spec("zstd:19"));
  const std::vector<uint8_t> z = compress(comp, src);
  ASSERT_FALSE(z.empty());
  // A high level must not do worse than the fast one.
  PageCompressor fast(spec("zstd:1"));
  EXPECT_LE(z.size(), compress(fast, src).size());
  std::vector<uint8_t> out(src.size());
  PageDecompressor dec;
  Status s = dec.decompress(Compression::Zstd, z, out);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_TRUE(out == src);
}

// Random data does not shrink: the codec says so (0) and the batch is stored raw.
TEST(PageCodec, IncompressibleReturnsZero) {
  for (const char* codec : {"lz4", "zstd", "zstd:3"}) {
    SCOPED_TRACE(codec);
    PageCompressor comp(spec(codec));
    for (size_t n : {size_t{4096}, size_t{64 << 10}, kChunk}) {
      const std::vector<uint8_t> src = pattern(n, static_cast<uint32_t>(n));
      std::vector<uint8_t> dst(comp.bound(n));
      auto r = comp.compress(src, dst);
      ASSERT_TRUE(r.ok()) << r.error().message;
      EXPECT_EQ(*r, 0u) << n << " bytes";
    }
  }
}

TEST(PageCodec, NoneAndEmpty) {
  PageCompressor none(spec("none"));
  const std::vector<uint8_t> src = text_like(8192, 5);
  std::vector<uint8_t> dst(none.bound(src.size()));
  auto r = none.compress(src, dst);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 0u);  // "none" never compresses

  PageDecompressor dec;
  std::vector<uint8_t> out(src.size());
  ASSERT_TRUE(dec.decompress(Compression::None, src, out).ok());
  EXPECT_TRUE(out == src);

  for (const char* codec : {"lz4", "zstd"}) {
    PageCompressor comp(spec(codec));
    std::vector<uint8_t> d(comp.bound(0) + 16);
    auto e = comp.compress({}, d);
    ASSERT_TRUE(e.ok()) << codec;
    EXPECT_EQ(*e, 0u) << codec;
  }
}

// ---- damaged input -----------------------------------------------------------------------

TEST(PageCodec, CorruptInputIsEbadmsg) {
  const std::vector<uint8_t> src = text_like(kChunk, 6);
  const std::vector<uint8_t> garbage = pattern(100000, 77);
  PageDecompressor dec;
  for (const char* codec : {"lz4", "zstd"}) {
    SCOPED_TRACE(codec);
    PageCompressor comp(spec(codec));
    const std::vector<uint8_t> z = compress(comp, src);
    ASSERT_FALSE(z.empty());
    std::vector<uint8_t> out(src.size());

    const std::vector<uint8_t> truncated(z.begin(), z.begin() + z.size() / 2);
    Status s = dec.decompress(comp.spec().kind, truncated, out);
    ASSERT_FALSE(s.ok()) << "truncated data decoded";
    EXPECT_EQ(s.error().code, EBADMSG);
    EXPECT_CONTAINS(s.error().message, codec);

    s = dec.decompress(comp.spec().kind, garbage, out);
    ASSERT_FALSE(s.ok()) << "garbage decoded";
    EXPECT_EQ(s.error().code, EBADMSG);

    s = dec.decompress(comp.spec().kind, {}, out);
    ASSERT_FALSE(s.ok()) << "empty input decoded";
    EXPECT_EQ(s.error().code, EBADMSG);

    // The decompressor is still usable after an error.
    s = dec.decompress(comp.spec().kind, z, out);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_TRUE(out == src);
  }
  // A damaged zstd frame header.
  PageCompressor zs(spec("zstd"));
  std::vector<uint8_t> z = compress(zs, src);
  ASSERT_GT(z.size(), 4u);
  z[0] ^= 0xff;
  std::vector<uint8_t> out(src.size());
  Status s = dec.decompress(Compression::Zstd, z, out);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, EBADMSG);
  // An unknown compression value (from a damaged record header).
  s = dec.decompress(static_cast<Compression>(7), z, out);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, EBADMSG);
}

TEST(PageCodec, WrongDestinationSizeIsEbadmsg) {
  const std::vector<uint8_t> src = mixed(1 << 20, 8);
  PageDecompressor dec;
  for (const char* codec : {"lz4", "zstd"}) {
    SCOPED_TRACE(codec);
    PageCompressor comp(spec(codec));
    const std::vector<uint8_t> z = compress(comp, src);
    ASSERT_FALSE(z.empty());
    for (size_t n : {src.size() - 4096, src.size() - 1, src.size() + 1, src.size() + 4096}) {
      std::vector<uint8_t> out(n);
      Status s = dec.decompress(comp.spec().kind, z, out);
      ASSERT_FALSE(s.ok()) << n << " bytes accepted for " << src.size();
      EXPECT_EQ(s.error().code, EBADMSG) << n;
    }
  }
  // Raw data of the wrong size.
  std::vector<uint8_t> out(src.size() + 4096);
  Status s = dec.decompress(Compression::None, src, out);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, EBADMSG);
}

// ---- reuse and ownership -----------------------------------------------------------------

// One compressor and decompressor per worker serve every batch: state must not leak between
// calls (sizes, data kinds and codecs vary).
TEST(PageCodec, ReuseOverManyCalls) {
  PageCompressor lz4(spec("lz4"));
  PageCompressor zstd(spec("zstd:3"));
  PageDecompressor dec;
  for (uint32_t i = 0; i < 200; ++i) {
    const size_t n = 4096 * (1 + (i * 37) % 64);
    std::vector<uint8_t> src;
    switch (i % 3) {
      case 0:
        src = text_like(n, i);
        break;
      case 1:  // random pages between zero pages
        src = pattern(n, i);
        for (size_t off = 0; off < n; off += 2 * 4096) std::fill_n(src.begin() + off, 4096, 0);
        break;
      default:
        src.assign(n, static_cast<uint8_t>(i));
        break;
    }
    PageCompressor& comp = i % 2 ? zstd : lz4;
    const std::vector<uint8_t> z = compress(comp, src);
    ASSERT_FALSE(z.empty()) << "call " << i;
    std::vector<uint8_t> out(n);
    Status s = dec.decompress(comp.spec().kind, z, out);
    ASSERT_TRUE(s.ok()) << "call " << i << ": " << s.error().message;
    ASSERT_TRUE(out == src) << "call " << i;
  }
}

TEST(PageCodec, MoveCompressor) {
  const std::vector<uint8_t> src = text_like(1 << 20, 9);
  PageDecompressor dec;
  auto check = [&](PageCompressor& c) {
    const std::vector<uint8_t> z = compress(c, src);
    ASSERT_FALSE(z.empty());
    std::vector<uint8_t> out(src.size());
    Status s = dec.decompress(c.spec().kind, z, out);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_TRUE(out == src);
  };

  PageCompressor a(spec("zstd:3"));
  check(a);
  PageCompressor b(std::move(a));
  EXPECT_EQ(b.spec(), spec("zstd:3"));
  check(b);

  PageCompressor c(spec("lz4"));
  c = std::move(b);
  EXPECT_EQ(c.spec(), spec("zstd:3"));
  check(c);

  // Moved-from objects can be given a new value (and are destroyed without a double free).
  a = PageCompressor(spec("zstd:1"));
  check(a);
  b = PageCompressor(spec("lz4"));
  check(b);

  std::vector<PageCompressor> v;
  for (int i = 0; i < 8; ++i) v.emplace_back(spec(i % 2 ? "zstd" : "lz4"));  // reallocations
  for (auto& x : v) check(x);
}

}  // namespace
}  // namespace crkit::image
