// Image stage alone: ImageWriter/ImageReader moving 4 MiB PageBatch records (CRC32C included)
// to and from a memfd, and plain 4 MiB writes to a file in /var/tmp with and without the final
// fsync, to tell the format's own cost from the page cache's and the disk's.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/unique_fd.hpp"
#include "image/codec.hpp"
#include "image/image_file.hpp"

namespace {

using namespace crkit::image;
using crkit::UniqueFd;

constexpr size_t kPage = 4096;
constexpr size_t kChunk = 4u << 20;
constexpr size_t kRecords = 64;  // 256 MiB per image
constexpr size_t kDistinct = 4;  // distinct chunk contents, written in turn

const std::vector<std::vector<uint8_t>>& chunks() {
  static std::vector<std::vector<uint8_t>> d;
  if (d.empty()) {
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t k = 0; k < kDistinct; ++k) {
      std::vector<uint8_t> v(kChunk);
      for (size_t i = 0; i < kChunk; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::memcpy(v.data() + i, &x, 8);
      }
      d.push_back(std::move(v));
    }
  }
  return d;
}

// The header of record i: one extent of 1024 pages (as a dump of a contiguous mapping makes).
PageBatchHeader header(size_t i) {
  PageBatchHeader h;
  h.pid = 4242;
  h.raw_size = kChunk;
  h.extents = {{0x7f0000000000 + i * kChunk, static_cast<uint32_t>(kChunk / kPage)}};
  return h;
}

// Writes the whole image (header, kRecords batches, Index, End) to fd.
crkit::Status write_image(int fd) {
  ImageWriter w(fd, "bench.img");
  CRKIT_TRY(w.write_file_header());
  for (size_t i = 0; i < kRecords; ++i)
    CRKIT_TRY(w.write_prepared(prepare_page_batch(header(i), chunks()[i % kDistinct])));
  return w.finish();
}

UniqueFd memfd() {
  return UniqueFd(::memfd_create("crkit-bench-image", MFD_CLOEXEC));
}

void BM_Crc32c(benchmark::State& state) {
  const auto& c = chunks()[0];
  uint32_t crc = 0;
  for (auto _ : state) {
    crc = crc32c(c, crc);
    benchmark::DoNotOptimize(crc);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kChunk));
}
BENCHMARK(BM_Crc32c)->MinTime(0.5);

void BM_ImageWrite(benchmark::State& state) {
  UniqueFd fd = memfd();
  for (auto _ : state) {
    state.PauseTiming();  // an empty file each time: allocation of its pages is measured
    if (::ftruncate(fd.get(), 0) != 0 || ::lseek(fd.get(), 0, SEEK_SET) != 0) {
      state.SkipWithError("ftruncate/lseek failed");
      break;
    }
    state.ResumeTiming();
    if (auto s = write_image(fd.get()); !s.ok()) {
      state.SkipWithError(s.error().message.c_str());
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRecords * kChunk));
}
BENCHMARK(BM_ImageWrite)->Iterations(10)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_ImageRead(benchmark::State& state) {
  UniqueFd fd = memfd();
  if (auto s = write_image(fd.get()); !s.ok()) {
    state.SkipWithError(s.error().message.c_str());
    return;
  }
  for (auto _ : state) {
    if (::lseek(fd.get(), 0, SEEK_SET) != 0) {
      state.SkipWithError("lseek failed");
      break;
    }
    ImageReader r(fd.get(), "bench.img");
    size_t n = 0;
    for (;;) {
      auto rec = r.next();
      if (!rec.ok()) {
        state.SkipWithError(rec.error().message.c_str());
        return;
      }
      if (!*rec) break;
      auto b = decode_page_batch(**rec, r.name());
      if (!b.ok()) {
        state.SkipWithError(b.error().message.c_str());
        return;
      }
      benchmark::DoNotOptimize(b->second.data());
      ++n;
    }
    if (n != kRecords) {
      state.SkipWithError("wrong record count");
      return;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRecords * kChunk));
}
BENCHMARK(BM_ImageRead)->Iterations(10)->UseRealTime()->Unit(benchmark::kMillisecond);

// 256 MiB in 4 MiB write(2) calls to a new file on the disk; with fsync the time includes
// getting the data onto the device (what --sync waits for). Each round writes a fresh file and
// leaves nothing dirty behind (fsync outside the timer), so that rounds start alike.
void BM_FileWrite(benchmark::State& state) {
  const bool sync = state.range(0) != 0;
  for (auto _ : state) {
    state.PauseTiming();
    char path[] = "/var/tmp/crkit-bench-XXXXXX";
    UniqueFd fd(::mkstemp(path));
    if (!fd) {
      state.SkipWithError("cannot create a file in /var/tmp");
      break;
    }
    ::unlink(path);
    state.ResumeTiming();
    for (size_t i = 0; i < kRecords; ++i) {
      const auto& c = chunks()[i % kDistinct];
      size_t off = 0;
      while (off < c.size()) {
        const ssize_t n = ::write(fd.get(), c.data() + off, c.size() - off);
        if (n <= 0) {
          state.SkipWithError("write failed");
          return;
        }
        off += static_cast<size_t>(n);
      }
    }
    if (sync && ::fsync(fd.get()) != 0) {
      state.SkipWithError("fsync failed");
      break;
    }
    state.PauseTiming();
    if (!sync && ::fsync(fd.get()) != 0) state.SkipWithError("fsync failed");
    fd.reset();  // the blocks are freed here, outside the timer
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRecords * kChunk));
}
BENCHMARK(BM_FileWrite)
    ->ArgName("fsync")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(5)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
