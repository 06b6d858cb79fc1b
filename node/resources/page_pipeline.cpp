#include "resources/page_pipeline.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "common/unique_fd.hpp"
#include "inject/remote_memory.hpp"

namespace crkit::resources {
namespace {

constexpr uint64_t kPage = 4096;
constexpr size_t kMaxIov = 1024;  // IOV_MAX: ranges per process_vm_writev call (and per batch)
alignas(64) const uint8_t kZeroPage[kPage] = {};

bool page_is_zero(const uint8_t* p) {
  return std::memcmp(p, kZeroPage, kPage) == 0;
}

struct Piece {
  uint64_t addr = 0;
  uint64_t npages = 0;
};

// At most batch_pages pages and kMaxIov ranges of one process.
struct Batch {
  pid_t pid = 0;
  pid_t source = 0;
  bool skip_zero = false;
  uint64_t npages = 0;
  std::vector<Piece> pieces;
};

std::vector<Batch> make_batches(std::span<const CaptureRun> runs, uint64_t batch_pages) {
  std::vector<Batch> out;
  for (const auto& r : runs) {
    for (uint64_t done = 0; done < r.npages;) {
      bool fits = !out.empty() && out.back().pid == r.pid && out.back().source == r.source &&
                  out.back().skip_zero == r.skip_zero && out.back().npages < batch_pages &&
                  out.back().pieces.size() < kMaxIov;
      if (!fits) out.push_back(Batch{r.pid, r.source, r.skip_zero, 0, {}});
      Batch& b = out.back();
      uint64_t n = std::min(r.npages - done, batch_pages - b.npages);
      b.pieces.push_back(Piece{r.start + done * kPage, n});
      b.npages += n;
      done += n;
    }
  }
  return out;
}

// Writes `local` into the ranges `remote` of pid (same total length) with one system call when
// it can; ranges the fast path cannot reach (PROT_NONE, ...) go through inject's fallback.
Status write_ranges(pid_t pid, const uint8_t* local, std::span<const struct iovec> remote) {
  uint64_t total = 0;
  for (const auto& r : remote) total += r.iov_len;
  struct iovec l {
    const_cast<uint8_t*>(local), total
  };
  ssize_t n = ::process_vm_writev(pid, &l, 1, remote.data(), remote.size(), 0);
  if (n < 0 && errno != EFAULT) return fail_errno(fmt::format("writing memory of process {}", pid));
  uint64_t done = n < 0 ? 0 : static_cast<uint64_t>(n);
  if (done == total) return {};
  // Partial: finish range by range from where the kernel stopped.
  uint64_t off = 0;
  for (const auto& r : remote) {
    const uint64_t addr = reinterpret_cast<uint64_t>(r.iov_base);
    const uint64_t end = off + r.iov_len;
    if (end > done) {
      const uint64_t skip = done > off ? done - off : 0;
      CRKIT_TRY(inject::write_memory(pid, addr + skip, {local + off + skip, r.iov_len - skip}));
    }
    off = end;
  }
  return {};
}

// Reads memory through /proc/PID/mem, not process_vm_readv: the latter pins pages, and pinning
// an anonymous page that is shared copy-on-write (with a snapshot fork, or between a parent and
// the children it forked) makes the kernel give the process a private copy of it first
// ("unshare"). Reading a 1 GiB snapshot that way copied all of it: 0.6-1.2 GB/s and 1 GiB more
// memory, against 5.5 GB/s and no copy here. /proc/PID/mem also reads PROT_NONE ranges.
class MemReader {
 public:
  Status read(pid_t pid, uint8_t* local, std::span<const struct iovec> remote) {
    if (pid != pid_ || !fd_) {
      const std::string path = fmt::format("/proc/{}/mem", pid);
      fd_.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd_) return fail_errno(fmt::format("opening {}", path));
      pid_ = pid;
    }
    for (const auto& r : remote) {
      const uint64_t addr = reinterpret_cast<uint64_t>(r.iov_base);
      for (size_t done = 0; done < r.iov_len;) {
        ssize_t n =
            ::pread(fd_.get(), local + done, r.iov_len - done, static_cast<off_t>(addr + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
          return fail_sys(n < 0 ? errno : EIO,
                          fmt::format("reading memory of process {} at {:#x} ({} bytes)", pid,
                                      addr + done, r.iov_len - done));
        done += static_cast<size_t>(n);
      }
      local += r.iov_len;
    }
    return {};
  }

 private:
  UniqueFd fd_;
  pid_t pid_ = 0;
};

// First error of any thread; the others stop when they see it.
class FirstError {
 public:
  void set(Error e) {
    std::lock_guard lock(mu_);
    if (!error_) error_ = std::move(e);
    failed_.store(true);
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  Status status() {
    std::lock_guard lock(mu_);
    if (error_) return fail(*error_);
    return {};
  }

 private:
  std::mutex mu_;
  std::optional<Error> error_;
  std::atomic<bool> failed_{false};
};

// Runs fn on n threads, calling tick() about every 100 ms on the calling thread until all have
// finished.
template <class Fn, class Tick>
void run_workers(unsigned n, Fn fn, Tick tick) {
  std::mutex mu;
  std::condition_variable cv;
  unsigned running = n;
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (unsigned i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      fn(i);
      std::lock_guard lock(mu);
      --running;
      cv.notify_all();
    });
  {
    std::unique_lock lock(mu);
    while (running) {
      cv.wait_for(lock, std::chrono::milliseconds(100));
      lock.unlock();
      tick();
      lock.lock();
    }
  }
  for (auto& t : threads) t.join();
}

}  // namespace

unsigned pipeline_workers(const PipelineOptions& o) {
  if (o.workers) return o.workers;
  cpu_set_t set;
  CPU_ZERO(&set);
  int cpus = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 2;
  return static_cast<unsigned>(std::clamp(cpus, 2, 8));
}

Result<PipelineStats> dump_pages(std::span<const CaptureRun> runs, image::ImageWriter& w,
                                 const PipelineOptions& opts, const ProgressFn& progress) {
  const uint64_t batch_pages = std::max<uint64_t>(1, opts.batch_bytes / kPage);
  const std::vector<Batch> batches = make_batches(runs, batch_pages);
  uint64_t total = 0;
  for (const auto& b : batches) total += b.npages * kPage;

  PipelineStats stats;
  stats.workers = std::min<unsigned>(pipeline_workers(opts), std::max<size_t>(1, batches.size()));
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done{0}, raw{0}, stored{0}, written{0}, zeros{0};
  std::mutex write_mu;
  FirstError error;

  auto worker = [&](unsigned) {
    image::PageCompressor comp(opts.compression);
    std::vector<uint8_t> buf(batch_pages * kPage);
    std::vector<uint8_t> cbuf(
        opts.compression.kind == image::Compression::None ? 0 : comp.bound(batch_pages * kPage));
    std::vector<struct iovec> remote;
    MemReader reader;
    while (!error.failed()) {
      const size_t i = next.fetch_add(1);
      if (i >= batches.size()) break;
      const Batch& b = batches[i];
      // 1. Capture.
      remote.clear();
      for (const auto& p : b.pieces)
        remote.push_back({reinterpret_cast<void*>(p.addr), p.npages * kPage});
      if (Status s = reader.read(b.source, buf.data(), remote); !s) {
        error.set(s.error().context(
            fmt::format("saving memory of process {} ({:#x}, {} ranges, {} pages)", b.pid,
                        b.pieces.front().addr, b.pieces.size(), b.npages)));
        break;
      }
      // 2. Zero pages become holes; the others are packed to the front of the buffer.
      image::PageBatchHeader h;
      h.pid = b.pid;
      uint64_t in = 0, out = 0;
      for (const auto& p : b.pieces)
        for (uint64_t k = 0; k < p.npages; ++k, in += kPage) {
          const uint64_t addr = p.addr + k * kPage;
          if (b.skip_zero && page_is_zero(buf.data() + in)) {
            zeros.fetch_add(1, std::memory_order_relaxed);
            continue;
          }
          if (out != in) std::memcpy(buf.data() + out, buf.data() + in, kPage);
          out += kPage;
          if (!h.extents.empty() &&
              h.extents.back().vaddr + h.extents.back().npages * kPage == addr)
            ++h.extents.back().npages;
          else
            h.extents.push_back({addr, 1});
        }
      done.fetch_add(in, std::memory_order_relaxed);
      if (h.extents.empty()) continue;
      h.raw_size = out;
      // 3. Compression (kept only when it makes the batch smaller).
      std::span<const uint8_t> body(buf.data(), out);
      if (opts.compression.kind != image::Compression::None) {
        auto n = comp.compress(body, cbuf);
        if (!n) {
          error.set(n.error().context(fmt::format("compressing memory of process {}", b.pid)));
          break;
        }
        if (*n) {
          body = std::span<const uint8_t>(cbuf.data(), *n);
          h.compression = static_cast<uint32_t>(opts.compression.kind);
        }
      }
      // 4. Checksum here, then 5. write.
      image::PreparedRecord rec = image::prepare_page_batch(h, body);
      {
        std::lock_guard lock(write_mu);
        if (error.failed()) break;
        if (Status s = w.write_prepared(rec); !s) {
          error.set(s.error());
          break;
        }
      }
      raw.fetch_add(out, std::memory_order_relaxed);
      stored.fetch_add(body.size(), std::memory_order_relaxed);
      written.fetch_add(out / kPage, std::memory_order_relaxed);
    }
  };
  auto tick = [&] {
    if (progress && !error.failed() && !progress(done.load(), total))
      error.set(Error{ETIMEDOUT, "checkpoint cancelled: time limit reached"});
  };
  if (!batches.empty()) run_workers(stats.workers, worker, tick);
  CRKIT_TRY(error.status());
  if (progress) progress(total, total);
  stats.raw_bytes = raw;
  stats.stored_bytes = stored;
  stats.pages_written = written;
  stats.zero_pages_skipped = zeros;
  return stats;
}

Status restore_pages(const std::map<pid_t, pid_t>& targets, image::ImageReader& reader,
                     std::optional<image::RawRecord> first, const PipelineOptions& opts,
                     const ProgressFn& progress, uint64_t total_bytes) {
  const unsigned n = pipeline_workers(opts);
  const size_t capacity = 2 * n;  // records read ahead: bounds the memory used
  std::mutex mu;
  std::condition_variable not_empty, not_full;
  std::deque<image::RawRecord> queue;
  std::vector<std::vector<uint8_t>> spare;  // payloads done with, for the reader to reuse
  bool closed = false;
  std::atomic<uint64_t> done{0};
  FirstError error;

  auto restore_one = [&](const image::RawRecord& rec, image::PageDecompressor& dec,
                         std::vector<uint8_t>& buf) -> Status {
    pid_t pid = 0;
    image::Compression kind = image::Compression::None;
    uint64_t raw_size = 0;
    std::vector<image::PageExtent> extents;
    std::span<const uint8_t> data;
    if (rec.header.type == image::RecordType::Pages) {
      CRKIT_ASSIGN(auto hp, image::decode_pages(rec, reader.name()));
      if (hp.first.compression != image::kCompressNone)
        return fail(EINVAL, fmt::format("{}: record #{}: unsupported page compression {}",
                                        reader.name(), rec.number, hp.first.compression));
      pid = hp.first.pid;
      raw_size = hp.first.raw_size;
      extents.push_back({hp.first.vaddr, hp.first.npages});
      data = hp.second;
    } else {
      CRKIT_ASSIGN(auto hp, image::decode_page_batch(rec, reader.name()));
      pid = hp.first.pid;
      raw_size = hp.first.raw_size;
      extents = std::move(hp.first.extents);
      data = hp.second;
      kind = static_cast<image::Compression>(hp.first.compression);
    }
    auto t = targets.find(pid);
    if (t == targets.end())
      return fail(EINVAL, fmt::format("{}: record #{} ({}) at offset {}: pages of process "
                                      "{}, which the image does not hold",
                                      reader.name(), rec.number,
                                      image::record_type_name(rec.header.type), rec.offset, pid));
    if (kind != image::Compression::None) {
      buf.resize(raw_size);
      if (Status s = dec.decompress(kind, data, buf); !s)
        return fail(s.error().context(
            fmt::format("{}: record #{} at offset {}", reader.name(), rec.number, rec.offset)));
      data = buf;
    }
    std::vector<struct iovec> remote;
    for (size_t i = 0; i < extents.size(); i += kMaxIov) {
      remote.clear();
      uint64_t off = 0;
      for (size_t k = i; k < std::min(extents.size(), i + kMaxIov); ++k)
        remote.push_back({reinterpret_cast<void*>(extents[k].vaddr), extents[k].npages * kPage});
      uint64_t base = 0;
      for (size_t k = 0; k < i; ++k) base += extents[k].npages * kPage;
      for (const auto& r : remote) off += r.iov_len;
      if (Status s = write_ranges(t->second, data.data() + base, remote); !s)
        return fail(
            s.error().context(fmt::format("restoring memory of process {} at {:#x} ({} "
                                          "bytes)",
                                          pid, extents[i].vaddr, off)));
    }
    done.fetch_add(raw_size, std::memory_order_relaxed);
    return {};
  };

  auto worker = [&](unsigned) {
    image::PageDecompressor dec;
    std::vector<uint8_t> buf;
    for (;;) {
      image::RawRecord rec;
      {
        std::unique_lock lock(mu);
        not_empty.wait(lock, [&] { return !queue.empty() || closed; });
        if (queue.empty()) return;
        rec = std::move(queue.front());
        queue.pop_front();
        not_full.notify_one();
      }
      if (error.failed()) continue;  // drain
      if (Status s = restore_one(rec, dec, buf); !s) error.set(s.error());
      std::lock_guard lock(mu);
      if (spare.size() < capacity) spare.push_back(std::move(rec.payload));
    }
  };

  std::vector<std::thread> threads;
  for (unsigned i = 0; i < n; ++i) threads.emplace_back(worker, i);
  std::optional<image::RawRecord> rec = std::move(first);
  auto last_tick = std::chrono::steady_clock::now();
  while (!error.failed()) {
    if (!rec) {
      {
        std::lock_guard lock(mu);
        if (!spare.empty()) {
          reader.recycle(std::move(spare.back()));
          spare.pop_back();
        }
      }
      auto r = reader.next();
      if (!r) {
        error.set(r.error());
        break;
      }
      rec = std::move(*r);
      if (!rec) break;  // End reached
    }
    if (rec->header.type == image::RecordType::Pages ||
        rec->header.type == image::RecordType::PageBatch) {
      std::unique_lock lock(mu);
      not_full.wait(lock, [&] { return queue.size() < capacity || error.failed(); });
      queue.push_back(std::move(*rec));
      not_empty.notify_one();
    }
    rec.reset();
    auto now = std::chrono::steady_clock::now();
    if (progress && now - last_tick > std::chrono::milliseconds(100)) {
      last_tick = now;
      if (!progress(done.load(), total_bytes))
        error.set(Error{ETIMEDOUT, "restart cancelled: time limit reached"});
    }
  }
  {
    std::lock_guard lock(mu);
    closed = true;
    not_empty.notify_all();
  }
  for (auto& t : threads) t.join();
  CRKIT_TRY(error.status());
  if (progress) progress(total_bytes, total_bytes);
  return {};
}

}  // namespace crkit::resources
