#include "resources/memory.hpp"

#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include <fmt/format.h>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "inject/remote_memory.hpp"
#include "libcr/control_block.h"
#include "resources/page_pipeline.hpp"
#include "resources/process.hpp"

namespace crkit::resources {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kTaskSize = 0x7ffffffff000ull;

bool is_special(const std::string& p) {
  return p == "[vdso]" || p == "[vvar]" || p == "[vvar_vclock]";
}

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

uint32_t prot_of(const proc::MapEntry& m) {
  return (m.read ? PROT_READ : 0) | (m.write ? PROT_WRITE : 0) | (m.exec ? PROT_EXEC : 0);
}

std::string prot_string(uint32_t p) {
  return fmt::format("{}{}{}", p & PROT_READ ? 'r' : '-', p & PROT_WRITE ? 'w' : '-',
                     p & PROT_EXEC ? 'x' : '-');
}

}  // namespace

Result<MemoryPlan> plan_memory(pid_t pid, const std::vector<proc::MapEntry>& smaps,
                               const RemoteAccess* remote, SharedPagesSeen* shared_seen) {
  MemoryPlan plan;
  std::vector<uint8_t> resident;
  CRKIT_ASSIGN(proc::Pagemap pm, proc::Pagemap::open(pid));
  std::vector<proc::PagemapEntry> entries;
  for (const auto& m : smaps) {
    if (m.path == "[vsyscall]" || m.path == "[uprobes]") continue;
    image::VmaRecord v;
    v.pid = pid;
    v.start = m.start;
    v.end = m.end;
    v.prot = prot_of(m);
    v.pgoff = m.offset;
    v.name = m.path;
    if (m.has_flag("gd")) v.vm_flags |= image::kVmGrowsDown;
    if (m.has_flag("dd")) v.vm_flags |= image::kVmDontDump;
    if (m.has_flag("lo")) v.vm_flags |= image::kVmLocked;
    if (m.has_flag("wf")) v.vm_flags |= image::kVmWipeOnFork;
    if (m.has_flag("dc")) v.vm_flags |= image::kVmDontFork;
    if (m.has_flag("hg")) v.vm_flags |= image::kVmHugePage;
    if (m.has_flag("nh")) v.vm_flags |= image::kVmNoHugePage;
    if (m.has_flag("mw")) v.vm_flags |= image::kVmMayWrite;
    bool save_all = false;   // whole range (backing file is gone)
    bool anon_only = false;  // only pages that are no longer the file's
    bool skip_zero = true;
    if (m.path == "[vdso]") {
      v.kind = image::VmaKind::Vdso;
    } else if (m.path == "[vvar]" || m.path == "[vvar_vclock]") {
      v.kind = image::VmaKind::Vvar;
    } else if (m.has_flag("io") || m.has_flag("pf")) {
      return fail(EBADF, fmt::format("process {}: mapping {:#x}-{:#x} of {} is a device (I/O) "
                                     "mapping, which cannot be checkpointed",
                                     pid, m.start, m.end, m.path.empty() ? "(anonymous)" : m.path));
    } else if (m.path == "[heap]") {
      v.kind = image::VmaKind::Heap;
    } else if (m.path == "[stack]") {
      v.kind = image::VmaKind::Stack;
    } else if (m.shared) {
      bool anon_like =
          m.deleted && (starts_with(m.path, "/dev/zero") || starts_with(m.path, "/SYSV") ||
                        starts_with(m.path, "/memfd:"));
      if (anon_like || m.deleted || m.path.empty()) {
        v.kind = image::VmaKind::AnonShared;
        // The shared-memory object's identity: mappings of one object are restored as one.
        v.file.dev = makedev(m.dev_major, m.dev_minor);
        v.file.ino = m.inode;
        if (m.deleted && !anon_like) v.vm_flags |= image::kVmFileDeleted;
        save_all = true;
      } else {
        v.kind = image::VmaKind::FileShared;
      }
    } else if (m.path.empty() || starts_with(m.path, "[anon") ||
               (m.dev_major == 0 && m.inode == 0)) {
      v.kind = image::VmaKind::Anon;
    } else {
      v.kind = image::VmaKind::FilePrivate;
      struct stat st {};
      bool same_file = !m.deleted && ::stat(m.path.c_str(), &st) == 0 && st.st_ino == m.inode &&
                       S_ISREG(st.st_mode);
      if (!same_file) {
        // The file is gone or replaced: keep the mapping's full contents.
        v.vm_flags |= image::kVmFileDeleted;
        save_all = true;
      } else {
        anon_only = true;
        skip_zero = false;  // a zero page here differs from the file's data
        v.file = file_identity(st);
      }
    }
    if (v.kind == image::VmaKind::FileShared) {
      struct stat st {};
      if (::stat(m.path.c_str(), &st) == 0) {
        v.file = file_identity(st);
      }
    }
    bool is_anon_kind = v.kind == image::VmaKind::Anon || v.kind == image::VmaKind::Heap ||
                        v.kind == image::VmaKind::Stack || v.kind == image::VmaKind::AnonShared;
    v.map_flags = (m.shared ? MAP_SHARED : MAP_PRIVATE) | (is_anon_kind ? MAP_ANONYMOUS : 0);

    if (v.kind != image::VmaKind::Vdso && v.kind != image::VmaKind::Vvar &&
        v.kind != image::VmaKind::FileShared) {
      // Decide page by page from pagemap, in bounded pieces.
      PageRun run;
      auto flush = [&]() {
        if (run.npages) plan.runs.push_back(run);
        run = PageRun{};
      };
      // The common case — private memory, pages decided by the page table alone — takes the
      // ranges from PAGEMAP_SCAN, without an entry per page (this runs while the job is frozen).
      bool scanned = false;
      if (!save_all && v.kind != image::VmaKind::AnonShared) {
        CRKIT_ASSIGN(auto ranges, pm.scan_populated(m.start, m.end, anon_only));
        if (ranges) {
          for (const auto& [rs, re] : *ranges)
            plan.runs.push_back(PageRun{rs, (re - rs) / kPage, skip_zero});
          scanned = true;
        }
      }
      for (uint64_t a = scanned ? m.end : m.start; a < m.end;) {
        uint64_t b = std::min(m.end, a + (uint64_t{1} << 16) * kPage);
        CRKIT_TRY(pm.read(a, b, entries));
        if (save_all && remote) {
          // Shared memory (or a deleted file's pages) may be populated without being mapped
          // in this process: ask the process which pages are resident (mincore), instead of
          // reading everything, which would allocate the whole object in the original.
          const uint64_t n = (b - a) / kPage;
          CRKIT_TRY(remote->caller->check(
              fmt::format("asking process {} which pages of {:#x}-{:#x} are resident", pid, a, b),
              SYS_mincore, {a, b - a, remote->scratch->addr()}));
          resident.resize(n);
          CRKIT_TRY(remote->scratch->get(0, resident));
        }
        for (size_t i = 0; i < entries.size(); ++i) {
          const auto& e = entries[i];
          bool want = (e.present() || e.swapped()) && (!anon_only || !e.file_or_shared_anon());
          if (save_all) want = !remote || e.present() || e.swapped() || (resident[i] & 1);
          uint64_t p = a + i * kPage;
          if (want && shared_seen && v.kind == image::VmaKind::AnonShared) {
            // Saved once per object: another process of the image may have saved this page.
            uint64_t index = (m.offset + (p - m.start)) / kPage;
            want = (*shared_seen)[{v.file.dev, v.file.ino}].insert(index).second;
          }
          if (want) {
            if (run.npages && run.start + run.npages * kPage != p) flush();
            if (!run.npages) run = PageRun{p, 0, skip_zero};
            ++run.npages;
          } else if (run.npages) {
            flush();
          }
        }
        a = b;
      }
      flush();
    }
    plan.vmas.push_back(std::move(v));
  }
  // Count candidates per VMA.
  for (const auto& r : plan.runs) {
    plan.candidate_pages += r.npages;
    for (auto& v : plan.vmas)
      if (r.start >= v.start && r.start < v.end) {
        v.saved_pages += r.npages;
        break;
      }
  }
  return plan;
}

std::vector<CaptureRun> capture_runs(pid_t pid, pid_t source, const MemoryPlan& plan) {
  std::vector<CaptureRun> out;
  out.reserve(plan.runs.size());
  for (const auto& r : plan.runs) out.push_back({pid, source, r.start, r.npages, r.skip_zero});
  return out;
}

Result<uint64_t> find_free_range(const std::vector<image::VmaRecord>& saved,
                                 const std::vector<proc::MapEntry>& current, uint64_t size,
                                 const std::vector<std::pair<uint64_t, uint64_t>>& also_taken) {
  std::vector<std::pair<uint64_t, uint64_t>> taken = also_taken;
  for (const auto& v : saved) taken.emplace_back(v.start, v.end);
  for (const auto& m : current) taken.emplace_back(m.start, m.end);
  std::sort(taken.begin(), taken.end());
  // Prefer addresses well away from both layouts' usual places, with guard gaps.
  const uint64_t gap = 1ull << 20;
  for (uint64_t cand = 0x100000000ull; cand + size < kTaskSize; cand += 0x40000000ull) {
    bool ok = true;
    for (const auto& [s, e] : taken)
      if (cand < e + gap && s < cand + size + gap) {
        ok = false;
        break;
      }
    if (ok) return cand;
  }
  return fail(ENOMEM, "no free address range for the restorer's scratch area");
}

Status check_mapped_files(const RestoreTarget& t, const std::vector<image::VmaRecord>& vmas,
                          const image::Credentials* owner) {
  // Looked at with the rights of the process's owner (root restarting a user's image).
  CRKIT_ASSIGN(FileCredentials as_owner, FileCredentials::assume(owner));
  std::map<std::string, bool> checked;
  for (const auto& v : vmas) {
    if (v.kind != image::VmaKind::FilePrivate && v.kind != image::VmaKind::FileShared) continue;
    if (v.vm_flags & image::kVmFileDeleted) continue;
    std::string path = t.relocate(v.name);
    if (checked.count(path)) continue;
    checked[path] = true;
    struct stat st {};
    if (::stat(path.c_str(), &st) < 0) return fail_errno(fmt::format("mapped file {}", path));
    if (!S_ISREG(st.st_mode))
      return fail(ESTALE, fmt::format("mapped file {} is no longer a regular file", path));
    // A shared mapping's contents are the file's own, changed through the mapping or not;
    // only pages of private mappings are restored by reference and need the same file.
    if (v.kind == image::VmaKind::FileShared) continue;
    bool relocated = path != v.name;
    if (!relocated &&
        (static_cast<uint64_t>(st.st_size) != v.file.size ||
         st.st_mtim.tv_sec != v.file.mtime_sec || st.st_mtim.tv_nsec != v.file.mtime_nsec))
      return fail(
          ESTALE,
          fmt::format(
              "mapped file {} changed since the checkpoint (size {} -> {}, mtime {} -> {}); "
              "memory mapped from it cannot be restored by reference",
              path, v.file.size, st.st_size, v.file.mtime_sec, st.st_mtim.tv_sec));
  }
  return {};
}

Status rebuild_address_space(RestoreTarget& t, const std::vector<image::VmaRecord>& vmas) {
  CRKIT_ASSIGN(auto current, proc::read_maps(t.real_pid));
  std::vector<proc::MapEntry> cur_special;
  for (const auto& m : current)
    if (is_special(m.path)) cur_special.push_back(m);
  std::vector<image::VmaRecord> saved_special;
  for (const auto& v : vmas)
    if (v.kind == image::VmaKind::Vdso || v.kind == image::VmaKind::Vvar)
      saved_special.push_back(v);

  // 1. Remove everything but the scratch area and the kernel's vDSO/vvar pages.
  std::vector<std::pair<uint64_t, uint64_t>> keep;
  keep.emplace_back(t.scratch->addr(), t.scratch->end());
  for (const auto& m : cur_special) keep.emplace_back(m.start, m.end);
  std::sort(keep.begin(), keep.end());
  uint64_t from = kPage;
  auto unmap = [&](uint64_t a, uint64_t b) -> Status {
    if (b <= a) return {};
    CRKIT_TRY(t.main->check(fmt::format("unmapping the stand-in's memory {:#x}-{:#x}", a, b),
                            SYS_munmap, {a, b - a}));
    return {};
  };
  for (const auto& [s, e] : keep) {
    CRKIT_TRY(unmap(from, s));
    from = e;
  }
  CRKIT_TRY(unmap(from, kTaskSize));

  // 2. Move the vDSO and its data pages to where the program expects them.
  if (!saved_special.empty()) {
    auto describe = [](uint64_t a, uint64_t b, const std::string& n) {
      return fmt::format("{} {:#x}-{:#x}", n, a, b);
    };
    bool same_shape = saved_special.size() == cur_special.size();
    for (size_t i = 0; same_shape && i < saved_special.size(); ++i)
      same_shape = saved_special[i].name == cur_special[i].path &&
                   saved_special[i].end - saved_special[i].start ==
                       cur_special[i].end - cur_special[i].start &&
                   saved_special[i].start - saved_special[0].start ==
                       cur_special[i].start - cur_special[0].start;
    if (!same_shape) {
      std::string a, b;
      for (auto& v : saved_special) a += " " + describe(v.start, v.end, v.name);
      for (auto& m : cur_special) b += " " + describe(m.start, m.end, m.path);
      return fail(
          kCrEBadArch,
          fmt::format("the vDSO layout of this kernel differs from the checkpointing kernel's "
                      "(image:{}; here:{}); restart on a machine with the same kernel",
                      a, b));
    }
    const uint64_t cur_base = cur_special.front().start;
    const uint64_t saved_base = saved_special.front().start;
    const uint64_t span = cur_special.back().end - cur_base;
    if (cur_base != saved_base) {
      // Through a temporary place, so old and new ranges never overlap.
      CRKIT_ASSIGN(uint64_t tmp,
                   find_free_range(vmas, current, span, {{t.scratch->addr(), t.scratch->end()}}));
      uint64_t base = cur_base;
      for (uint64_t dest_base : {tmp, saved_base}) {
        // Move the vDSO itself last: the syscall instruction we use lives in it.
        std::vector<size_t> order;
        for (size_t i = 0; i < cur_special.size(); ++i)
          if (cur_special[i].path != "[vdso]") order.push_back(i);
        for (size_t i = 0; i < cur_special.size(); ++i)
          if (cur_special[i].path == "[vdso]") order.push_back(i);
        for (size_t i : order) {
          uint64_t off = cur_special[i].start - cur_base;
          uint64_t len = cur_special[i].end - cur_special[i].start;
          CRKIT_TRY(t.main->check(
              fmt::format("moving {} to {:#x}", cur_special[i].path, dest_base + off), SYS_mremap,
              {base + off, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dest_base + off}));
        }
        t.site = t.site - base + dest_base;
        t.main->set_site(t.site);
        base = dest_base;
      }
    }
  }

  // 3. Create the saved mappings, writable while they are filled.
  std::map<std::string, long> fds;  // remote fds of mapped files, by path and mode
  Status st;
  // Shared memory comes as descriptors the process already holds (one per object).
  for (const auto& [key, fd] : t.shm_fds)
    fds[fmt::format("\2shm{}:{}", key.first, key.second)] = fd;
  for (const auto& v : vmas) {
    if (v.kind == image::VmaKind::Vdso || v.kind == image::VmaKind::Vvar) continue;
    uint64_t len = v.end - v.start;
    uint64_t prot = v.prot | PROT_READ | PROT_WRITE;
    uint64_t flags = MAP_FIXED | (v.map_flags & (MAP_SHARED | MAP_PRIVATE));
    if (v.vm_flags & image::kVmGrowsDown) flags |= MAP_GROWSDOWN;
    long fd = -1;
    uint64_t pgoff = 0;
    bool by_file =
        (v.kind == image::VmaKind::FilePrivate || v.kind == image::VmaKind::FileShared) &&
        !(v.vm_flags & image::kVmFileDeleted);
    if (by_file) {
      std::string path = t.relocate(v.name);
      const bool shared = v.kind == image::VmaKind::FileShared;
      const bool writes = v.prot & PROT_WRITE;
      // A shared mapping the program may make writable later (mprotect) needs the file open
      // for writing now, as it was (VM_MAYWRITE).
      bool rw = shared && (writes || (v.vm_flags & image::kVmMayWrite));
      if (shared && !writes) prot = v.prot | PROT_READ;  // no write access needed to fill it
      std::string key = path + (rw ? "\1rw" : "\1ro");
      if (auto it = fds.find(key); it != fds.end()) {
        fd = it->second;
      } else {
        CRKIT_ASSIGN(uint64_t p, t.scratch->put_string(0, path));
        auto open_mode = [&](bool w) {
          return t.main->call(SYS_openat,
                              {static_cast<uint64_t>(AT_FDCWD), p,
                               static_cast<uint64_t>(w ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0});
        };
        CRKIT_ASSIGN(long got, open_mode(rw));
        if (got < 0 && rw && !writes) {
          log::warn(
              "{} can no longer be opened for writing; its read-only shared mapping at "
              "{:#x} cannot be made writable again",
              path, v.start);
          CRKIT_ASSIGN(got, open_mode(false));
        }
        if (got < 0)
          return fail_sys(static_cast<int>(-got), fmt::format("opening mapped file {}", path));
        fd = got;
        fds[key] = fd;
      }
      pgoff = v.pgoff;
    } else if (v.kind == image::VmaKind::AnonShared && v.file.ino) {
      auto it = t.shm_fds.find({v.file.dev, v.file.ino});
      if (it == t.shm_fds.end()) {
        st = fail(EIO, fmt::format("mapping {:#x}-{:#x} ({}): its shared memory object was not "
                                   "prepared",
                                   v.start, v.end, v.name));
        break;
      }
      fd = it->second;
      pgoff = v.pgoff;
    } else {
      flags |= MAP_ANONYMOUS;
    }
    auto r = t.main->check(
        fmt::format("mapping {:#x}-{:#x} {} ({})", v.start, v.end, prot_string(v.prot),
                    v.name.empty() ? image::vma_kind_name(v.kind) : v.name),
        SYS_mmap, {v.start, len, prot, flags, static_cast<uint64_t>(fd), pgoff});
    if (!r) {
      st = fail(r.error());
      break;
    }
    if (static_cast<uint64_t>(*r) != v.start) {
      st = fail(EFAULT, fmt::format("mapping {:#x}-{:#x} landed at {:#x}", v.start, v.end, *r));
      break;
    }
  }
  for (const auto& [k, fd] : fds) (void)t.main->call(SYS_close, {static_cast<uint64_t>(fd)});
  t.shm_fds.clear();
  return st;
}

std::vector<ShmKey> shared_memory_of(std::span<const image::VmaRecord> vmas) {
  std::set<ShmKey> keys;
  for (const auto& v : vmas)
    if (v.kind == image::VmaKind::AnonShared && v.file.ino) keys.insert({v.file.dev, v.file.ino});
  return {keys.begin(), keys.end()};
}

Result<std::map<ShmKey, UniqueFd>> create_shared_memory(std::span<const image::VmaRecord> vmas) {
  std::map<ShmKey, uint64_t> size;
  std::map<ShmKey, std::string> name;
  for (const auto& v : vmas) {
    if (v.kind != image::VmaKind::AnonShared || !v.file.ino) continue;
    ShmKey key{v.file.dev, v.file.ino};
    auto& sz = size[key];
    sz = std::max(sz, v.pgoff + (v.end - v.start));
    if (!name.count(key))  // "/memfd:NAME" keeps its name; others become "crkit-shm"
      name[key] = starts_with(v.name, "/memfd:") ? v.name.substr(7) : "crkit-shm";
  }
  std::map<ShmKey, UniqueFd> out;
  for (const auto& [key, sz] : size) {
    // libcr's control block is sealed against resizing, as libcr made it (libcr_peer.hpp).
    const bool libcr_block = starts_with(name[key], libcr::kControlName);
    UniqueFd fd(static_cast<int>(::syscall(SYS_memfd_create, name[key].c_str(),
                                           MFD_CLOEXEC | (libcr_block ? MFD_ALLOW_SEALING : 0))));
    if (!fd)
      return fail_errno(
          fmt::format("creating the shared memory object {} ({} bytes)", name[key], sz));
    if (::ftruncate(fd.get(), static_cast<off_t>(sz)) < 0)
      return fail_errno(
          fmt::format("sizing the shared memory object {} to {} bytes", name[key], sz));
    if (libcr_block &&
        ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
      return fail_errno(fmt::format("sealing the shared memory object {}", name[key]));
    out[key] = std::move(fd);
  }
  return out;
}

Status fill_pages(const std::map<pid_t, RestoreTarget*>& targets, image::ImageReader& reader,
                  std::optional<image::RawRecord> first, const PipelineOptions& opts,
                  const ProgressFn& progress, uint64_t total_bytes) {
  std::map<pid_t, pid_t> real;
  for (const auto& [vpid, t] : targets) real[vpid] = t->real_pid;
  return restore_pages(real, reader, std::move(first), opts, progress, total_bytes);
}

Status finalize_protections(RestoreTarget& t, const std::vector<image::VmaRecord>& vmas) {
  for (const auto& v : vmas) {
    if (v.kind == image::VmaKind::Vdso || v.kind == image::VmaKind::Vvar) continue;
    const uint64_t len = v.end - v.start;
    if (v.prot != (v.prot | PROT_READ | PROT_WRITE))
      CRKIT_TRY(t.main->check(
          fmt::format("setting protection {} on {:#x}-{:#x}", prot_string(v.prot), v.start, v.end),
          SYS_mprotect, {v.start, len, v.prot}));
    // Per-mapping advice the program gave (wipe-on-fork protects e.g. RNG state in children).
    static constexpr std::pair<uint32_t, int> kAdvice[] = {{image::kVmWipeOnFork, MADV_WIPEONFORK},
                                                           {image::kVmDontFork, MADV_DONTFORK},
                                                           {image::kVmHugePage, MADV_HUGEPAGE},
                                                           {image::kVmNoHugePage, MADV_NOHUGEPAGE},
                                                           {image::kVmDontDump, MADV_DONTDUMP}};
    for (const auto& [flag, advice] : kAdvice)
      if (v.vm_flags & flag)
        CRKIT_TRY(t.main->check(
            fmt::format("restoring madvise({}) on {:#x}-{:#x}", advice, v.start, v.end),
            SYS_madvise, {v.start, len, static_cast<uint64_t>(advice)}));
    if (v.vm_flags & image::kVmLocked) {
      auto r = t.main->call(SYS_mlock, {v.start, len});
      if (!r) return fail(r.error());
      if (*r < 0)
        log::warn("cannot lock {:#x}-{:#x} in memory again (mlock): {}", v.start, v.end,
                  std::strerror(static_cast<int>(-*r)));
    }
  }
  return {};
}

}  // namespace crkit::resources
