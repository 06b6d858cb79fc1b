// Shared helpers for the image unit tests: sample records with non-default values in every field,
// field-by-field comparisons, and in-memory image building/reading.
#pragma once

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "image/codec.hpp"
#include "image/image_file.hpp"
#include "image/schema.hpp"

namespace crkit::image::testing {

inline SigInfo make_siginfo(int signo, uint8_t fill) {
  SigInfo si;
  for (size_t i = 0; i < si.raw.size(); ++i) si.raw[i] = static_cast<uint8_t>(fill + i);
  std::memcpy(si.raw.data(), &signo, sizeof signo);
  return si;
}

inline FileIdentity make_identity(uint64_t base) {
  return FileIdentity{
      base + 1, base + 2, base + 3, static_cast<int64_t>(base + 4), static_cast<int64_t>(base + 5),
      0100644};
}

inline ImageInfo sample_info() {
  ImageInfo v;
  v.page_size = 4096;
  v.xsave_size = 2696;
  v.xfeatures = 0x2e7;
  v.created_unix = 1700000000;
  v.hostname = "node-17.example";
  v.kernel_release = "6.1.0-18-amd64";
  v.crkit_version = "0.1.0";
  v.scope = 4;
  v.target = 4242;
  v.process_count = 1;
  return v;
}

inline ProcessRecord sample_process(int32_t pid = 4242) {
  ProcessRecord v;
  v.pid = pid;
  v.ppid = 1;
  v.pgid = pid;
  v.sid = 1000;
  v.comm = "sleeper";
  v.cwd = "/home/user/work dir";
  v.root = "/";
  v.umask = 027;
  v.personality = 0x0040000;
  v.was_stopped = 1;
  v.creds =
      Credentials{1000, 1001, 1002, 1003,          2000, 2001, 2002, 2003, {4, 24, 27, 100000},
                  0x11, 0x22, 0x33, 0x1ffffffffff, 0x44};
  v.mm.start_code = 0x555555554000;
  v.mm.end_code = 0x555555556000;
  v.mm.start_data = 0x555555557000;
  v.mm.end_data = 0x555555558000;
  v.mm.start_brk = 0x555555559000;
  v.mm.brk = 0x55555557a000;
  v.mm.start_stack = 0x7ffffffde000;
  v.mm.arg_start = 0x7ffffffde100;
  v.mm.arg_end = 0x7ffffffde200;
  v.mm.env_start = 0x7ffffffde300;
  v.mm.env_end = 0x7ffffffde400;
  v.mm.auxv = {33, 0x7ffff7fc1000, 6, 4096, 0, 0};
  v.mm.exe_path = "/usr/bin/sleeper";
  v.mm.exe_id = make_identity(100);
  v.sigactions.assign(64, SigAction{});
  v.sigactions[2 - 1] = SigAction{0x401000, 0x04000000, 0x7ffff7e1a520, 0x4000};  // SIGINT
  v.sigactions[13 - 1] = SigAction{1, 0, 0, 0};                                   // SIGPIPE ign
  v.itimers = {ItimerVal{0, 500000, 1, 250000}, ItimerVal{}, ItimerVal{7, 8, 9, 10}};
  v.rlimits = {RLimit{1, 2}, RLimit{3, ~0ull}, RLimit{8388608, ~0ull}};
  v.shared_pending = {make_siginfo(10, 0x30)};
  v.thread_count = 2;
  v.dumpable = 0;
  v.no_new_privs = 1;
  v.exit_signal = 10;
  v.pdeath_signal = 15;
  return v;
}

inline ThreadRecord sample_thread(int32_t pid = 4242, int32_t tid = 4242) {
  ThreadRecord v;
  v.pid = pid;
  v.tid = tid;
  v.gpregs.assign(216, 0);
  for (size_t i = 0; i < v.gpregs.size(); ++i) v.gpregs[i] = static_cast<uint8_t>(i * 7 + tid);
  // user_regs_struct: rip is field 16, rsp field 19 (8 bytes each).
  uint64_t rip = 0x401234 + static_cast<uint64_t>(tid - pid), rsp = 0x7ffffffdd000;
  std::memcpy(v.gpregs.data() + 16 * 8, &rip, 8);
  std::memcpy(v.gpregs.data() + 19 * 8, &rsp, 8);
  v.xstate.assign(832, 0);
  for (size_t i = 0; i < v.xstate.size(); ++i) v.xstate[i] = static_cast<uint8_t>(i ^ 0x5a);
  v.sigmask = 0x10000 | (1ull << 62);
  v.pending = {make_siginfo(14, 0x10), make_siginfo(35, 0x20)};
  v.altstack_sp = 0x7ffff7ff0000;
  v.altstack_size = 16384;
  v.altstack_flags = 0;
  v.robust_list = 0x7ffff7d8aa20;
  v.robust_list_len = 24;
  v.clear_child_tid = 0x7ffff7d8a9f0;
  v.rseq_addr = 0x7ffff7d8b060;
  v.rseq_len = 32;
  v.rseq_sig = 0x53053053;
  v.comm = tid == pid ? "sleeper" : "worker";
  return v;
}

inline VmaRecord sample_vma(int32_t pid = 4242) {
  VmaRecord v;
  v.pid = pid;
  v.start = 0x555555554000;
  v.end = 0x555555556000;
  v.prot = PROT_READ | PROT_EXEC;
  v.map_flags = MAP_PRIVATE;
  v.kind = VmaKind::FilePrivate;
  v.vm_flags = kVmLocked | kVmDontDump;
  v.pgoff = 0x1000;
  v.name = "/usr/bin/sleeper";
  v.file = make_identity(200);
  v.saved_pages = 2;
  return v;
}

inline FdRecord sample_fd(int32_t pid = 4242) {
  FdRecord v;
  v.pid = pid;
  v.fd = 3;
  v.kind = FdKind::Unlinked;
  v.flags = 02 | 02000;  // O_RDWR | O_APPEND
  v.cloexec = 1;
  v.pos = 12345;
  v.path = "/tmp/scratch.dat";
  v.id = make_identity(300);
  v.size_at_checkpoint = 20000;
  v.content_id = 7;
  v.file_id = 11;
  v.attrs = kFdAttrUnlinked;
  return v;
}

inline PagesHeader sample_pages_header(int32_t pid, uint64_t vaddr, uint32_t npages) {
  return PagesHeader{pid, vaddr, npages, kCompressNone, uint64_t{npages} * 4096};
}

inline std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    v[i] = static_cast<uint8_t>(x);
  }
  return v;
}

// ---- field-by-field comparisons -------------------------------------------------------------

inline void expect_eq(const FileIdentity& a, const FileIdentity& b) {
  EXPECT_EQ(a.dev, b.dev);
  EXPECT_EQ(a.ino, b.ino);
  EXPECT_EQ(a.size, b.size);
  EXPECT_EQ(a.mtime_sec, b.mtime_sec);
  EXPECT_EQ(a.mtime_nsec, b.mtime_nsec);
  EXPECT_EQ(a.mode, b.mode);
}

inline void expect_eq(const std::vector<SigInfo>& a, const std::vector<SigInfo>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].raw, b[i].raw) << "siginfo " << i;
}

inline void expect_eq(const ImageInfo& a, const ImageInfo& b) {
  EXPECT_EQ(a.page_size, b.page_size);
  EXPECT_EQ(a.xsave_size, b.xsave_size);
  EXPECT_EQ(a.xfeatures, b.xfeatures);
  EXPECT_EQ(a.created_unix, b.created_unix);
  EXPECT_EQ(a.hostname, b.hostname);
  EXPECT_EQ(a.kernel_release, b.kernel_release);
  EXPECT_EQ(a.crkit_version, b.crkit_version);
  EXPECT_EQ(a.scope, b.scope);
  EXPECT_EQ(a.target, b.target);
  EXPECT_EQ(a.process_count, b.process_count);
}

inline void expect_eq(const ProcessRecord& a, const ProcessRecord& b) {
  EXPECT_EQ(a.pid, b.pid);
  EXPECT_EQ(a.ppid, b.ppid);
  EXPECT_EQ(a.pgid, b.pgid);
  EXPECT_EQ(a.sid, b.sid);
  EXPECT_EQ(a.comm, b.comm);
  EXPECT_EQ(a.cwd, b.cwd);
  EXPECT_EQ(a.root, b.root);
  EXPECT_EQ(a.umask, b.umask);
  EXPECT_EQ(a.personality, b.personality);
  EXPECT_EQ(a.was_stopped, b.was_stopped);
  EXPECT_EQ(a.creds.uid, b.creds.uid);
  EXPECT_EQ(a.creds.euid, b.creds.euid);
  EXPECT_EQ(a.creds.suid, b.creds.suid);
  EXPECT_EQ(a.creds.fsuid, b.creds.fsuid);
  EXPECT_EQ(a.creds.gid, b.creds.gid);
  EXPECT_EQ(a.creds.egid, b.creds.egid);
  EXPECT_EQ(a.creds.sgid, b.creds.sgid);
  EXPECT_EQ(a.creds.fsgid, b.creds.fsgid);
  EXPECT_EQ(a.creds.groups, b.creds.groups);
  EXPECT_EQ(a.creds.cap_inh, b.creds.cap_inh);
  EXPECT_EQ(a.creds.cap_prm, b.creds.cap_prm);
  EXPECT_EQ(a.creds.cap_eff, b.creds.cap_eff);
  EXPECT_EQ(a.creds.cap_bnd, b.creds.cap_bnd);
  EXPECT_EQ(a.creds.cap_amb, b.creds.cap_amb);
  EXPECT_EQ(a.mm.start_code, b.mm.start_code);
  EXPECT_EQ(a.mm.end_code, b.mm.end_code);
  EXPECT_EQ(a.mm.start_data, b.mm.start_data);
  EXPECT_EQ(a.mm.end_data, b.mm.end_data);
  EXPECT_EQ(a.mm.start_brk, b.mm.start_brk);
  EXPECT_EQ(a.mm.brk, b.mm.brk);
  EXPECT_EQ(a.mm.start_stack, b.mm.start_stack);
  EXPECT_EQ(a.mm.arg_start, b.mm.arg_start);
  EXPECT_EQ(a.mm.arg_end, b.mm.arg_end);
  EXPECT_EQ(a.mm.env_start, b.mm.env_start);
  EXPECT_EQ(a.mm.env_end, b.mm.env_end);
  EXPECT_EQ(a.mm.auxv, b.mm.auxv);
  EXPECT_EQ(a.mm.exe_path, b.mm.exe_path);
  expect_eq(a.mm.exe_id, b.mm.exe_id);
  ASSERT_EQ(a.sigactions.size(), b.sigactions.size());
  for (size_t i = 0; i < a.sigactions.size(); ++i) {
    EXPECT_EQ(a.sigactions[i].handler, b.sigactions[i].handler) << i;
    EXPECT_EQ(a.sigactions[i].flags, b.sigactions[i].flags) << i;
    EXPECT_EQ(a.sigactions[i].restorer, b.sigactions[i].restorer) << i;
    EXPECT_EQ(a.sigactions[i].mask, b.sigactions[i].mask) << i;
  }
  ASSERT_EQ(a.itimers.size(), b.itimers.size());
  for (size_t i = 0; i < a.itimers.size(); ++i) {
    EXPECT_EQ(a.itimers[i].interval_sec, b.itimers[i].interval_sec) << i;
    EXPECT_EQ(a.itimers[i].interval_usec, b.itimers[i].interval_usec) << i;
    EXPECT_EQ(a.itimers[i].value_sec, b.itimers[i].value_sec) << i;
    EXPECT_EQ(a.itimers[i].value_usec, b.itimers[i].value_usec) << i;
  }
  ASSERT_EQ(a.rlimits.size(), b.rlimits.size());
  for (size_t i = 0; i < a.rlimits.size(); ++i) {
    EXPECT_EQ(a.rlimits[i].cur, b.rlimits[i].cur) << i;
    EXPECT_EQ(a.rlimits[i].max, b.rlimits[i].max) << i;
  }
  expect_eq(a.shared_pending, b.shared_pending);
  EXPECT_EQ(a.thread_count, b.thread_count);
  EXPECT_EQ(a.dumpable, b.dumpable);
  EXPECT_EQ(a.no_new_privs, b.no_new_privs);
  EXPECT_EQ(a.exit_signal, b.exit_signal);
  EXPECT_EQ(a.pdeath_signal, b.pdeath_signal);
}

inline void expect_eq(const ThreadRecord& a, const ThreadRecord& b) {
  EXPECT_EQ(a.pid, b.pid);
  EXPECT_EQ(a.tid, b.tid);
  EXPECT_EQ(a.gpregs, b.gpregs);
  EXPECT_EQ(a.xstate, b.xstate);
  EXPECT_EQ(a.sigmask, b.sigmask);
  expect_eq(a.pending, b.pending);
  EXPECT_EQ(a.altstack_sp, b.altstack_sp);
  EXPECT_EQ(a.altstack_size, b.altstack_size);
  EXPECT_EQ(a.altstack_flags, b.altstack_flags);
  EXPECT_EQ(a.robust_list, b.robust_list);
  EXPECT_EQ(a.robust_list_len, b.robust_list_len);
  EXPECT_EQ(a.clear_child_tid, b.clear_child_tid);
  EXPECT_EQ(a.rseq_addr, b.rseq_addr);
  EXPECT_EQ(a.rseq_len, b.rseq_len);
  EXPECT_EQ(a.rseq_sig, b.rseq_sig);
  EXPECT_EQ(a.comm, b.comm);
}

inline void expect_eq(const VmaRecord& a, const VmaRecord& b) {
  EXPECT_EQ(a.pid, b.pid);
  EXPECT_EQ(a.start, b.start);
  EXPECT_EQ(a.end, b.end);
  EXPECT_EQ(a.prot, b.prot);
  EXPECT_EQ(a.map_flags, b.map_flags);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.vm_flags, b.vm_flags);
  EXPECT_EQ(a.pgoff, b.pgoff);
  EXPECT_EQ(a.name, b.name);
  expect_eq(a.file, b.file);
  EXPECT_EQ(a.saved_pages, b.saved_pages);
}

inline void expect_eq(const FdRecord& a, const FdRecord& b) {
  EXPECT_EQ(a.pid, b.pid);
  EXPECT_EQ(a.fd, b.fd);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.flags, b.flags);
  EXPECT_EQ(a.cloexec, b.cloexec);
  EXPECT_EQ(a.pos, b.pos);
  EXPECT_EQ(a.path, b.path);
  expect_eq(a.id, b.id);
  EXPECT_EQ(a.size_at_checkpoint, b.size_at_checkpoint);
  EXPECT_EQ(a.content_id, b.content_id);
  EXPECT_EQ(a.file_id, b.file_id);
  EXPECT_EQ(a.attrs, b.attrs);
}

inline void expect_eq(const PagesHeader& a, const PagesHeader& b) {
  EXPECT_EQ(a.pid, b.pid);
  EXPECT_EQ(a.vaddr, b.vaddr);
  EXPECT_EQ(a.npages, b.npages);
  EXPECT_EQ(a.compression, b.compression);
  EXPECT_EQ(a.raw_size, b.raw_size);
}

inline void expect_eq(const FileContentHeader& a, const FileContentHeader& b) {
  EXPECT_EQ(a.content_id, b.content_id);
  EXPECT_EQ(a.offset, b.offset);
  EXPECT_EQ(a.total_size, b.total_size);
}

// ---- images in memory -----------------------------------------------------------------------

// A memfd holding `bytes`, positioned at 0.
inline UniqueFd memfd_with(const std::vector<uint8_t>& bytes) {
  UniqueFd fd(memfd_create("crkit-image-test", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t w = ::write(fd.get(), bytes.data() + off, bytes.size() - off);
    EXPECT_GT(w, 0);
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_SET), 0);
  return fd;
}

inline std::vector<uint8_t> read_fd_all(int fd) {
  std::vector<uint8_t> out;
  EXPECT_EQ(::lseek(fd, 0, SEEK_SET), 0);
  uint8_t buf[65536];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    EXPECT_GE(r, 0);
    if (r <= 0) break;
    out.insert(out.end(), buf, buf + r);
  }
  return out;
}

// Record layout of an image as written (offsets of headers and payload sizes).
struct Layout {
  struct Rec {
    RecordType type;
    uint64_t offset;
    uint64_t length;
  };
  std::vector<Rec> records;  // including Index and End
};

inline constexpr uint32_t kSampleContentId = 7;

// Writes the sample image (one process, two threads, two VMAs, one fd, file content, pages).
inline Status write_sample(ImageWriter& w, Layout* layout = nullptr) {
  auto note = [&](RecordType t, uint64_t before) {
    if (layout)
      layout->records.push_back({t, before, w.bytes_written() - before - kRecordHeaderSize});
  };
  CRKIT_TRY(w.write_file_header());
  uint64_t b = w.bytes_written();
  CRKIT_TRY(w.write(sample_info()));
  note(RecordType::ImageInfo, b);
  b = w.bytes_written();
  CRKIT_TRY(w.write(sample_process()));
  note(RecordType::Process, b);
  b = w.bytes_written();
  CRKIT_TRY(w.write(sample_thread(4242, 4242)));
  note(RecordType::Thread, b);
  b = w.bytes_written();
  CRKIT_TRY(w.write(sample_thread(4242, 4243)));
  note(RecordType::Thread, b);
  b = w.bytes_written();
  CRKIT_TRY(w.write(sample_vma()));
  note(RecordType::Vma, b);
  VmaRecord heap = sample_vma();
  heap.start = 0x555555559000;
  heap.end = 0x55555557a000;
  heap.prot = PROT_READ | PROT_WRITE;
  heap.kind = VmaKind::Heap;
  heap.name = "[heap]";
  heap.file = {};
  heap.pgoff = 0;
  heap.vm_flags = 0;
  heap.saved_pages = 5;  // populated; 3 of them are stored (2 all-zero pages left out)
  b = w.bytes_written();
  CRKIT_TRY(w.write(heap));
  note(RecordType::Vma, b);
  b = w.bytes_written();
  CRKIT_TRY(w.write(sample_fd()));
  note(RecordType::Fd, b);
  std::vector<uint8_t> content = pattern(300, 9);
  b = w.bytes_written();
  CRKIT_TRY(w.write_file_content(FileContentHeader{kSampleContentId, 100, 20000}, content));
  note(RecordType::FileContent, b);
  std::vector<uint8_t> p1 = pattern(2 * 4096, 1);
  b = w.bytes_written();
  CRKIT_TRY(w.write_pages(sample_pages_header(4242, 0x555555554000, 2), p1));
  note(RecordType::Pages, b);
  std::vector<uint8_t> p2 = pattern(3 * 4096, 2);
  b = w.bytes_written();
  CRKIT_TRY(w.write_pages(sample_pages_header(4242, 0x555555559000, 3), p2));
  note(RecordType::Pages, b);
  b = w.bytes_written();
  CRKIT_TRY(w.finish());
  if (layout) {
    // finish() wrote Index then End; End's payload is 16 bytes.
    uint64_t end_total = kRecordHeaderSize + 16;
    uint64_t end_off = w.bytes_written() - end_total;
    layout->records.push_back({RecordType::Index, b, end_off - b - kRecordHeaderSize});
    layout->records.push_back({RecordType::End, end_off, 16});
  }
  return {};
}

// The sample image as bytes.
inline std::vector<uint8_t> sample_image_bytes(Layout* layout = nullptr) {
  UniqueFd fd(memfd_create("crkit-sample", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  ImageWriter w(fd.get(), "sample");
  Status s = write_sample(w, layout);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  return read_fd_all(fd.get());
}

// Reads every record of an image; the error of the first failure.
inline Result<std::vector<RawRecord>> read_all(int fd, const std::string& name = "test.img") {
  ImageReader r(fd, name);
  CRKIT_TRY(r.read_file_header());
  std::vector<RawRecord> out;
  for (;;) {
    CRKIT_ASSIGN(std::optional<RawRecord> rec, r.next());
    if (!rec) break;
    out.push_back(std::move(*rec));
  }
  return out;
}

inline Result<std::vector<RawRecord>> read_bytes(const std::vector<uint8_t>& bytes,
                                                 const std::string& name = "test.img") {
  UniqueFd fd = memfd_with(bytes);
  return read_all(fd.get(), name);
}

}  // namespace crkit::image::testing
