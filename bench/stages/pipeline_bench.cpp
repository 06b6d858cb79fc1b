// The whole dump pipeline (resources::dump_pages: capture, zero-page scan, compression,
// checksum, write) of a child's 256 MiB into a memfd image, per codec and worker count: what
// a checkpoint of that much memory costs before the disk. Bytes/s count the child's memory.
// Data: random (incompressible) or mostly zero (7 of 8 pages all-zero, the 8th text-like).
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/unique_fd.hpp"
#include "image/image_file.hpp"
#include "image/page_codec.hpp"
#include "memory_child.hpp"
#include "resources/page_pipeline.hpp"

namespace {

using namespace crkit;

constexpr size_t kPage = 4096;
constexpr size_t kChildBytes = 256u << 20;

uint64_t next_random(uint64_t& x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

void fill_mostly_zero(uint8_t* p, size_t n) {
  static const char* const kWords[] = {"checkpoint ", "restart ", "the ",    "process ",
                                       "memory ",     "page ",    "\n",      "thread ",
                                       "image ",      "= ",       "signal ", "/home/"};
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t off = 0; off < n; off += kPage) {
    if ((off / kPage) % 8 != 7) {
      p[off] = 0;  // touched: a present page that the scan finds all-zero
      continue;
    }
    for (size_t i = 0; i < kPage;)
      for (const char* c = kWords[next_random(x) % std::size(kWords)]; *c && i < kPage; ++c)
        p[off + i++] = static_cast<uint8_t>(*c);
  }
}

using crkit::bench::fill_random;
using Child = crkit::bench::MemoryChild;

const Child* g_children[2] = {};  // random, mostly zero
const char* const kDataNames[] = {"random", "mostly_zero"};
const char* const kCodecs[] = {"none", "lz4", "zstd"};

void BM_DumpPages(benchmark::State& state) {
  const int data = static_cast<int>(state.range(0));
  const int codec = static_cast<int>(state.range(1));
  const unsigned workers = static_cast<unsigned>(state.range(2));
  state.SetLabel(fmt::format("{} {} workers={}", kDataNames[data], kCodecs[codec], workers));
  const Child& child = *g_children[data];

  resources::PipelineOptions opts;
  opts.compression = *image::parse_compression(kCodecs[codec]);
  opts.workers = workers;
  const resources::CaptureRun run{child.pid(), child.pid(), child.addr(), kChildBytes / kPage,
                                  true};
  UniqueFd fd(::memfd_create("crkit-bench-pipeline", MFD_CLOEXEC));
  uint64_t image_bytes = 0;
  resources::PipelineStats stats;
  for (auto _ : state) {
    state.PauseTiming();
    if (::ftruncate(fd.get(), 0) != 0 || ::lseek(fd.get(), 0, SEEK_SET) != 0) {
      state.SkipWithError("ftruncate/lseek failed");
      break;
    }
    state.ResumeTiming();
    image::ImageWriter w(fd.get(), "bench.img");
    if (auto s = w.write_file_header(); !s.ok()) {
      state.SkipWithError(s.error().message.c_str());
      break;
    }
    auto r = resources::dump_pages({&run, 1}, w, opts, {});
    if (!r.ok()) {
      state.SkipWithError(r.error().message.c_str());
      break;
    }
    if (auto s = w.finish(); !s.ok()) {
      state.SkipWithError(s.error().message.c_str());
      break;
    }
    stats = *r;
    image_bytes = w.bytes_written();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kChildBytes));
  state.counters["ratio"] =
      image_bytes ? static_cast<double>(kChildBytes) / static_cast<double>(image_bytes) : 0;
  state.counters["image_MiB"] = static_cast<double>(image_bytes) / (1 << 20);
  state.counters["zero_pages"] = static_cast<double>(stats.zero_pages_skipped);
  state.counters["workers_used"] = stats.workers;
}
BENCHMARK(BM_DumpPages)
    ->ArgNames({"data", "codec", "workers"})
    ->ArgsProduct({{0, 1}, {0, 1, 2}, {1, 2, 4}})
    ->Iterations(5)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // Forked before any pipeline thread exists.
  const Child random(kChildBytes, fill_random);
  const Child mostly_zero(kChildBytes, fill_mostly_zero);
  g_children[0] = &random;
  g_children[1] = &mostly_zero;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
