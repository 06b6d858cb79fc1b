// Capture stage alone: copying a child's 256 MiB of touched memory with process_vm_readv (one
// range per call vs. many remote ranges, as dump batches are), pread on /proc/PID/mem (what
// the pipeline uses), inject::read_memory, reading a copy-on-write snapshot both ways, the
// all-zero page scan and /proc/PID/pagemap read vs. PAGEMAP_SCAN, to see which part of a dump
// the freeze pays for.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "inject/remote_memory.hpp"
#include "memory_child.hpp"
#include "proc/proc.hpp"

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kPiece = 4u << 20;  // one pipeline batch
constexpr size_t kChildBytes = 256u << 20;
constexpr size_t kIovMax = 1024;

using crkit::bench::die;
using crkit::bench::fill_random;
using Child = crkit::bench::MemoryChild;

const Child* g_child = nullptr;

// A local 4 MiB buffer, touched so that page faults are not measured.
std::vector<uint8_t> piece_buffer() {
  return std::vector<uint8_t>(kPiece, 1);
}

// process_vm_readv of the 256 MiB, 4 MiB per call; remote ranges of range_bytes each
// (range_bytes == kPiece: one iovec per call).
void BM_ProcessVmReadv(benchmark::State& state) {
  const size_t range_bytes = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> buf = piece_buffer();
  std::vector<struct iovec> remote;
  for (auto _ : state) {
    for (uint64_t off = 0; off < kChildBytes; off += kPiece) {
      // At most IOV_MAX ranges per call: with 4 KiB ranges a call moves exactly 4 MiB.
      for (uint64_t sub = 0; sub < kPiece; sub += range_bytes * kIovMax) {
        remote.clear();
        const uint64_t end = std::min<uint64_t>(kPiece, sub + range_bytes * kIovMax);
        for (uint64_t a = sub; a < end; a += range_bytes)
          remote.push_back({reinterpret_cast<void*>(g_child->addr() + off + a), range_bytes});
        struct iovec local {
          buf.data() + sub, end - sub
        };
        const ssize_t n =
            ::process_vm_readv(g_child->pid(), &local, 1, remote.data(), remote.size(), 0);
        if (n != static_cast<ssize_t>(end - sub)) {
          state.SkipWithError("process_vm_readv failed or was short");
          return;
        }
      }
    }
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kChildBytes));
  state.counters["calls"] = static_cast<double>(
      kChildBytes / kPiece * ((kPiece + range_bytes * kIovMax - 1) / (range_bytes * kIovMax)));
}
BENCHMARK(BM_ProcessVmReadv)
    ->ArgName("range_bytes")
    ->Arg(kPiece)
    ->Arg(64 << 10)
    ->Arg(4 << 10)
    ->Iterations(20)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_InjectReadMemory(benchmark::State& state) {
  std::vector<uint8_t> buf = piece_buffer();
  for (auto _ : state) {
    for (uint64_t off = 0; off < kChildBytes; off += kPiece) {
      auto s = crkit::inject::read_memory(g_child->pid(), g_child->addr() + off, buf);
      if (!s.ok()) {
        state.SkipWithError(s.error().message.c_str());
        return;
      }
    }
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kChildBytes));
}
BENCHMARK(BM_InjectReadMemory)->Iterations(20)->UseRealTime()->Unit(benchmark::kMillisecond);

// pread of /proc/PID/mem, 4 MiB per call: the pipeline's capture.
void BM_ProcMemPread(benchmark::State& state) {
  std::vector<uint8_t> buf = piece_buffer();
  const std::string path = "/proc/" + std::to_string(g_child->pid()) + "/mem";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    state.SkipWithError("cannot open /proc/PID/mem");
    return;
  }
  for (auto _ : state) {
    for (uint64_t off = 0; off < kChildBytes; off += kPiece)
      if (::pread(fd, buf.data(), kPiece, static_cast<off_t>(g_child->addr() + off)) !=
          static_cast<ssize_t>(kPiece)) {
        state.SkipWithError("pread of /proc/PID/mem failed or was short");
        break;
      }
    benchmark::DoNotOptimize(buf.data());
  }
  ::close(fd);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kChildBytes));
}
BENCHMARK(BM_ProcMemPread)->Iterations(20)->UseRealTime()->Unit(benchmark::kMillisecond);

// Reading a copy-on-write snapshot, as a --cow checkpoint does: each iteration forks a fresh
// copy of this process's own 256 MiB (untimed) and reads the copy's memory.
// method 0 = process_vm_readv (pins pages: the kernel unshares, i.e. copies, each one first),
// method 1 = pread on /proc/PID/mem (no copy).
void BM_SnapshotRead(benchmark::State& state) {
  const bool proc_mem = state.range(0) == 1;
  state.SetLabel(proc_mem ? "/proc/PID/mem" : "process_vm_readv");
  static std::vector<uint8_t> mine = [] {
    std::vector<uint8_t> v(kChildBytes);
    fill_random(v.data(), v.size());
    return v;
  }();
  std::vector<uint8_t> buf = piece_buffer();
  for (auto _ : state) {
    state.PauseTiming();
    const pid_t copy = ::fork();
    if (copy < 0) die("fork");
    if (copy == 0) {
      for (;;) ::pause();
    }
    const std::string path = "/proc/" + std::to_string(copy) + "/mem";
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    state.ResumeTiming();
    bool ok = fd >= 0;
    for (uint64_t off = 0; ok && off < kChildBytes; off += kPiece) {
      uint8_t* remote = mine.data() + off;
      if (proc_mem) {
        ok = ::pread(fd, buf.data(), kPiece,
                     static_cast<off_t>(reinterpret_cast<uint64_t>(remote))) ==
             static_cast<ssize_t>(kPiece);
      } else {
        struct iovec l {
          buf.data(), kPiece
        }, r{remote, kPiece};
        ok = ::process_vm_readv(copy, &l, 1, &r, 1, 0) == static_cast<ssize_t>(kPiece);
      }
    }
    state.PauseTiming();
    if (fd >= 0) ::close(fd);
    ::kill(copy, SIGKILL);
    ::waitpid(copy, nullptr, 0);
    state.ResumeTiming();
    if (!ok) {
      state.SkipWithError("reading the snapshot failed");
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kChildBytes));
}
BENCHMARK(BM_SnapshotRead)
    ->ArgName("method")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(5)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The pipeline's zero-page test over a captured 4 MiB batch. All-zero pages are the slow case
// (every byte is compared); random pages differ at the first byte.
void BM_ZeroPageScan(benchmark::State& state) {
  const bool zero = state.range(0) == 0;
  state.SetLabel(zero ? "all-zero pages" : "random pages");
  alignas(64) static const uint8_t kZeroPage[kPage] = {};
  std::vector<uint8_t> buf = piece_buffer();
  if (zero) {
    std::fill(buf.begin(), buf.end(), 0);
  } else {
    auto s = crkit::inject::read_memory(g_child->pid(), g_child->addr(), buf);
    if (!s.ok()) {
      state.SkipWithError(s.error().message.c_str());
      return;
    }
  }
  size_t zeros = 0;
  for (auto _ : state) {
    for (size_t off = 0; off < kPiece; off += kPage)
      zeros += std::memcmp(buf.data() + off, kZeroPage, kPage) == 0;
    benchmark::DoNotOptimize(zeros);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kPiece));
}
BENCHMARK(BM_ZeroPageScan)->ArgName("random")->Arg(0)->Arg(1)->MinTime(0.5);

void BM_Pagemap(benchmark::State& state) {
  auto pm = crkit::proc::Pagemap::open(g_child->pid());
  if (!pm.ok()) {
    state.SkipWithError(pm.error().message.c_str());
    return;
  }
  std::vector<crkit::proc::PagemapEntry> out;
  size_t present = 0;
  for (auto _ : state) {
    auto s = pm->read(g_child->addr(), g_child->addr() + kChildBytes, out);
    if (!s.ok()) {
      state.SkipWithError(s.error().message.c_str());
      return;
    }
    present = 0;
    for (const auto& e : out) present += e.present();
    benchmark::DoNotOptimize(present);
  }
  if (present != kChildBytes / kPage) state.SkipWithError("not every page of the child is present");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * (kChildBytes / kPage)));
  state.SetLabel("items = pages");
}
BENCHMARK(BM_Pagemap)->Iterations(50)->UseRealTime()->Unit(benchmark::kMillisecond);

// The same question answered by PAGEMAP_SCAN: ranges of populated pages instead of entries.
void BM_PagemapScan(benchmark::State& state) {
  auto pm = crkit::proc::Pagemap::open(g_child->pid());
  if (!pm.ok()) {
    state.SkipWithError(pm.error().message.c_str());
    return;
  }
  uint64_t covered = 0;
  for (auto _ : state) {
    auto r = pm->scan_populated(g_child->addr(), g_child->addr() + kChildBytes, true);
    if (!r.ok() || !*r) {
      state.SkipWithError(r.ok() ? "no PAGEMAP_SCAN on this kernel" : r.error().message.c_str());
      return;
    }
    covered = 0;
    for (const auto& [a, b] : **r) covered += b - a;
    benchmark::DoNotOptimize(covered);
  }
  if (covered != kChildBytes) state.SkipWithError("the scan did not report every page present");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * (kChildBytes / kPage)));
  state.SetLabel("items = pages");
}
BENCHMARK(BM_PagemapScan)->Iterations(50)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const Child child(kChildBytes, fill_random);  // forked before any benchmark thread exists
  g_child = &child;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
