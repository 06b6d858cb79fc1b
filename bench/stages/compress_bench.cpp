// Compression stage alone: lz4, zstd:1 and zstd:3 on 4 MiB chunks (one PageBatch each) of
// random, text-like and mostly-zero data, to choose the default --compress; ratio = raw/stored.
// Mostly-zero: each page zero but for a 200-byte run (fresh heap arenas, bss); whole zero
// pages never reach the compressor (the pipeline leaves them out first).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "image/page_codec.hpp"

namespace {

using crkit::image::CompressionSpec;
using crkit::image::PageCompressor;
using crkit::image::PageDecompressor;

constexpr size_t kChunk = 4u << 20;
constexpr size_t kPage = 4096;
constexpr int kChunks = 8;  // 32 MiB in turn, so the data does not sit in the L2 cache

uint64_t next_random(uint64_t& x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

std::vector<uint8_t> random_data(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t r = next_random(x);
    std::memcpy(v.data() + i, &r, 8);
  }
  return v;
}

void fill_text(uint8_t* p, size_t n, uint64_t& x) {
  static const char* const kWords[] = {
      "checkpoint ", "restart ", "the ", "process ", "of ",   "memory ", "page ",  "\n",
      "thread ",     "image ",   "= ",   "signal ",  "user ", "/home/",  "error ", "\t"};
  size_t i = 0;
  while (i < n) {
    const uint64_t r = next_random(x);
    if (r % 5 == 0) {  // a number now and then
      const std::string num = std::to_string(r % 100000) + " ";
      for (char c : num)
        if (i < n) p[i++] = static_cast<uint8_t>(c);
      continue;
    }
    for (const char* c = kWords[r % std::size(kWords)]; *c && i < n; ++c)
      p[i++] = static_cast<uint8_t>(*c);
  }
}

std::vector<uint8_t> text_data(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  fill_text(v.data(), n, x);
  return v;
}

std::vector<uint8_t> mostly_zero_data(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n, 0);
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t off = 0; off < n; off += kPage) {
    const size_t at = next_random(x) % (kPage - 200);
    fill_text(v.data() + off + at, 200, x);
  }
  return v;
}

enum Kind { kRandom, kText, kMostlyZero };
const char* const kKindNames[] = {"random", "text", "mostly_zero"};
const char* const kCodecs[] = {"lz4", "zstd:1", "zstd:3"};

const std::vector<std::vector<uint8_t>>& chunks(Kind k) {
  static std::vector<std::vector<uint8_t>> data[3];
  auto& d = data[k];
  if (d.empty())
    for (int i = 0; i < kChunks; ++i)
      d.push_back(k == kRandom ? random_data(kChunk, i + 1)
                  : k == kText ? text_data(kChunk, i + 1)
                               : mostly_zero_data(kChunk, i + 1));
  return d;
}

CompressionSpec spec_of(int codec) {
  auto s = crkit::image::parse_compression(kCodecs[codec]);
  return s.ok() ? *s : CompressionSpec{};
}

// Compressed form of every chunk (empty where the codec stores it raw).
struct Compressed {
  std::vector<std::vector<uint8_t>> data;
  uint64_t raw = 0, stored = 0;
};

Compressed compress_all(int codec, Kind k) {
  PageCompressor comp(spec_of(codec));
  Compressed out;
  for (const auto& c : chunks(k)) {
    std::vector<uint8_t> dst(comp.bound(c.size()));
    auto n = comp.compress(c, dst);
    dst.resize(n.ok() ? *n : 0);
    out.raw += c.size();
    out.stored += dst.empty() ? c.size() : dst.size();
    out.data.push_back(std::move(dst));
  }
  return out;
}

void BM_Compress(benchmark::State& state) {
  const int codec = static_cast<int>(state.range(0));
  const Kind kind = static_cast<Kind>(state.range(1));
  state.SetLabel(std::string(kCodecs[codec]) + " " + kKindNames[kind]);
  const auto& src = chunks(kind);
  PageCompressor comp(spec_of(codec));
  std::vector<uint8_t> dst(comp.bound(kChunk));
  uint64_t raw = 0, stored = 0;
  size_t i = 0;
  for (auto _ : state) {
    const auto& c = src[i++ % src.size()];
    auto n = comp.compress(c, dst);
    if (!n.ok()) {
      state.SkipWithError(n.error().message.c_str());
      break;
    }
    benchmark::DoNotOptimize(dst.data());
    raw += c.size();
    stored += *n ? *n : c.size();  // 0: stored raw
  }
  state.SetBytesProcessed(static_cast<int64_t>(raw));
  state.counters["ratio"] = stored ? static_cast<double>(raw) / static_cast<double>(stored) : 0;
}

void BM_Decompress(benchmark::State& state) {
  const int codec = static_cast<int>(state.range(0));
  const Kind kind = static_cast<Kind>(state.range(1));
  state.SetLabel(std::string(kCodecs[codec]) + " " + kKindNames[kind]);
  const Compressed z = compress_all(codec, kind);
  for (const auto& d : z.data)
    if (d.empty()) {
      state.SkipWithError("incompressible: stored raw, nothing to decompress");
      return;
    }
  PageDecompressor dec;
  std::vector<uint8_t> out(kChunk);
  uint64_t raw = 0;
  size_t i = 0;
  for (auto _ : state) {
    const auto& d = z.data[i++ % z.data.size()];
    auto s = dec.decompress(spec_of(codec).kind, d, out);
    if (!s.ok()) {
      state.SkipWithError(s.error().message.c_str());
      break;
    }
    benchmark::DoNotOptimize(out.data());
    raw += kChunk;
  }
  state.SetBytesProcessed(static_cast<int64_t>(raw));
  state.counters["ratio"] = static_cast<double>(z.raw) / static_cast<double>(z.stored);
}

void args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"codec", "data"});
  for (int codec = 0; codec < 3; ++codec)
    for (int kind = 0; kind < 3; ++kind) b->Args({codec, kind});
  b->MinTime(0.5)->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Compress)->Apply(args);
BENCHMARK(BM_Decompress)->Apply(args);

}  // namespace

BENCHMARK_MAIN();
