// Binary encoding of the image schema: little-endian integers, u32-length-prefixed strings and
// blobs, u32-count-prefixed vectors, struct fields in declaration order (see schema.hpp).
#include "image/codec.hpp"

#include <isa-l/crc.h>

#include <cerrno>
#include <cstring>

namespace crkit::image {

// ---------------------------------------------------------------------------------------------
// Names

const char* record_type_name(RecordType t) {
  switch (t) {
    case RecordType::ImageInfo:
      return "ImageInfo";
    case RecordType::Process:
      return "Process";
    case RecordType::Thread:
      return "Thread";
    case RecordType::Vma:
      return "Vma";
    case RecordType::Fd:
      return "Fd";
    case RecordType::FileContent:
      return "FileContent";
    case RecordType::Pages:
      return "Pages";
    case RecordType::PageBatch:
      return "PageBatch";
    case RecordType::Index:
      return "Index";
    case RecordType::End:
      return "End";
  }
  return "unknown";
}

const char* vma_kind_name(VmaKind k) {
  switch (k) {
    case VmaKind::Anon:
      return "anon";
    case VmaKind::Heap:
      return "heap";
    case VmaKind::Stack:
      return "stack";
    case VmaKind::FilePrivate:
      return "file-private";
    case VmaKind::FileShared:
      return "file-shared";
    case VmaKind::AnonShared:
      return "anon-shared";
    case VmaKind::Vdso:
      return "vdso";
    case VmaKind::Vvar:
      return "vvar";
  }
  return "unknown";
}

const char* fd_kind_name(FdKind k) {
  switch (k) {
    case FdKind::Regular:
      return "regular";
    case FdKind::Unlinked:
      return "unlinked";
    case FdKind::Directory:
      return "directory";
    case FdKind::CharDevice:
      return "chardev";
    case FdKind::Tty:
      return "tty";
    case FdKind::ExternalPipe:
      return "external-pipe";
    case FdKind::Socket:
      return "socket";
    case FdKind::Pipe:
      return "pipe";
    case FdKind::Fifo:
      return "fifo";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// CRC32C (Castagnoli), standard convention: crc32c("123456789") == 0xE3069283. A seed is the
// result of a previous call, so crc32c(b, crc32c(a)) == crc32c(a followed by b). isa-l's
// crc32_iscsi neither pre- nor post-inverts, hence the ~ on both sides.

uint32_t crc32c(std::span<const uint8_t> data, uint32_t seed) {
  uint32_t crc = ~seed;
  const uint8_t* p = data.data();
  size_t left = data.size();
  constexpr size_t kChunk = size_t{1} << 30;  // crc32_iscsi takes an int length
  while (left > 0) {
    size_t n = left < kChunk ? left : kChunk;
    // isa-l's prototype is not const-correct; it does not write to the buffer.
    crc = crc32_iscsi(const_cast<unsigned char*>(p), static_cast<int>(n), crc);
    p += n;
    left -= n;
  }
  return ~crc;
}

// ---------------------------------------------------------------------------------------------
// Encoder

void Encoder::u8(uint8_t v) {
  buf_.push_back(v);
}

void Encoder::u32(uint32_t v) {
  uint8_t b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  buf_.insert(buf_.end(), b, b + 4);
}

void Encoder::u64(uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  buf_.insert(buf_.end(), b, b + 8);
}

void Encoder::str(const std::string& s) {
  u32(static_cast<uint32_t>(s.size()));
  buf_.insert(buf_.end(), s.begin(), s.end());
}

void Encoder::bytes(std::span<const uint8_t> b) {
  u32(static_cast<uint32_t>(b.size()));
  raw(b);
}

void Encoder::raw(std::span<const uint8_t> b) {
  buf_.insert(buf_.end(), b.begin(), b.end());
}

// ---------------------------------------------------------------------------------------------
// Decoder

namespace {

Unexpected short_read(const char* field, size_t need, size_t left) {
  return fail(EIO, fmt::format("field '{}': needs {} bytes, {} left", field, need, left));
}

}  // namespace

Result<std::span<const uint8_t>> Decoder::raw(size_t n, const char* field) {
  if (n > remaining()) return short_read(field, n, remaining());
  auto s = data_.subspan(pos_, n);
  pos_ += n;
  return s;
}

Result<uint8_t> Decoder::u8(const char* field) {
  CRKIT_ASSIGN(auto b, raw(1, field));
  return b[0];
}

Result<uint32_t> Decoder::u32(const char* field) {
  CRKIT_ASSIGN(auto b, raw(4, field));
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(b[i]) << (8 * i);
  return v;
}

Result<uint64_t> Decoder::u64(const char* field) {
  CRKIT_ASSIGN(auto b, raw(8, field));
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(b[i]) << (8 * i);
  return v;
}

Result<int32_t> Decoder::i32(const char* field) {
  CRKIT_ASSIGN(uint32_t v, u32(field));
  return static_cast<int32_t>(v);
}

Result<int64_t> Decoder::i64(const char* field) {
  CRKIT_ASSIGN(uint64_t v, u64(field));
  return static_cast<int64_t>(v);
}

Result<std::string> Decoder::str(const char* field) {
  CRKIT_ASSIGN(uint32_t n, u32(field));
  CRKIT_ASSIGN(auto b, raw(n, field));
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

Result<std::vector<uint8_t>> Decoder::bytes(const char* field) {
  CRKIT_ASSIGN(uint32_t n, u32(field));
  CRKIT_ASSIGN(auto b, raw(n, field));
  return std::vector<uint8_t>(b.begin(), b.end());
}

// ---------------------------------------------------------------------------------------------
// Struct codecs

namespace {

// Reads a field into an lvalue, propagating a decode error.
#define CRKIT_GET(dst, call)                              \
  do {                                                    \
    auto crkit_get_r_ = (call);                           \
    if (!crkit_get_r_) return fail(crkit_get_r_.error()); \
    dst = crkit_get_r_.value();                           \
  } while (0)

// Reads a vector's element count and checks that the remaining payload can hold that many
// elements of at least min_size bytes each (so a corrupted count cannot cause a huge allocation).
Result<uint32_t> read_count(Decoder& d, const char* field, size_t min_size) {
  CRKIT_ASSIGN(uint32_t n, d.u32(field));
  if (static_cast<uint64_t>(n) * min_size > d.remaining())
    return fail(EIO, fmt::format("field '{}': {} elements need at least {} bytes, {} left", field,
                                 n, static_cast<uint64_t>(n) * min_size, d.remaining()));
  return n;
}

template <class Enum>
Result<Enum> read_enum(Decoder& d, const char* field, const char* (*name)(Enum)) {
  CRKIT_ASSIGN(uint32_t v, d.u32(field));
  Enum e = static_cast<Enum>(v);
  if (std::strcmp(name(e), "unknown") == 0)
    return fail(EIO, fmt::format("field '{}': unknown value {}", field, v));
  return e;
}

// Fixed-size encodings of the small structs (used for vector size checks).
constexpr size_t kSigActionSize = 32;
constexpr size_t kItimerValSize = 32;
constexpr size_t kRLimitSize = 16;
constexpr size_t kSigInfoSize = 128;
constexpr size_t kIndexEntrySize = 20;

void encode_file_identity(Encoder& e, const FileIdentity& v) {
  e.u64(v.dev);
  e.u64(v.ino);
  e.u64(v.size);
  e.i64(v.mtime_sec);
  e.i64(v.mtime_nsec);
  e.u32(v.mode);
}

Status decode_file_identity(Decoder& d, FileIdentity& v) {
  CRKIT_GET(v.dev, d.u64("dev"));
  CRKIT_GET(v.ino, d.u64("ino"));
  CRKIT_GET(v.size, d.u64("size"));
  CRKIT_GET(v.mtime_sec, d.i64("mtime_sec"));
  CRKIT_GET(v.mtime_nsec, d.i64("mtime_nsec"));
  CRKIT_GET(v.mode, d.u32("mode"));
  return {};
}

void encode_siginfos(Encoder& e, const std::vector<SigInfo>& v) {
  e.u32(static_cast<uint32_t>(v.size()));
  for (const auto& si : v) e.raw(si.raw);
}

Status decode_siginfos(Decoder& d, const char* field, std::vector<SigInfo>& v) {
  CRKIT_ASSIGN(uint32_t n, read_count(d, field, kSigInfoSize));
  v.assign(n, SigInfo{});
  for (auto& si : v) {
    CRKIT_ASSIGN(auto b, d.raw(si.raw.size(), field));
    std::memcpy(si.raw.data(), b.data(), si.raw.size());
  }
  return {};
}

void encode_credentials(Encoder& e, const Credentials& v) {
  e.u32(v.uid);
  e.u32(v.euid);
  e.u32(v.suid);
  e.u32(v.fsuid);
  e.u32(v.gid);
  e.u32(v.egid);
  e.u32(v.sgid);
  e.u32(v.fsgid);
  e.u32(static_cast<uint32_t>(v.groups.size()));
  for (uint32_t g : v.groups) e.u32(g);
  e.u64(v.cap_inh);
  e.u64(v.cap_prm);
  e.u64(v.cap_eff);
  e.u64(v.cap_bnd);
  e.u64(v.cap_amb);
}

Status decode_credentials(Decoder& d, Credentials& v) {
  CRKIT_GET(v.uid, d.u32("uid"));
  CRKIT_GET(v.euid, d.u32("euid"));
  CRKIT_GET(v.suid, d.u32("suid"));
  CRKIT_GET(v.fsuid, d.u32("fsuid"));
  CRKIT_GET(v.gid, d.u32("gid"));
  CRKIT_GET(v.egid, d.u32("egid"));
  CRKIT_GET(v.sgid, d.u32("sgid"));
  CRKIT_GET(v.fsgid, d.u32("fsgid"));
  CRKIT_ASSIGN(uint32_t n, read_count(d, "groups", 4));
  v.groups.assign(n, 0);
  for (auto& g : v.groups) CRKIT_GET(g, d.u32("groups"));
  CRKIT_GET(v.cap_inh, d.u64("cap_inh"));
  CRKIT_GET(v.cap_prm, d.u64("cap_prm"));
  CRKIT_GET(v.cap_eff, d.u64("cap_eff"));
  CRKIT_GET(v.cap_bnd, d.u64("cap_bnd"));
  CRKIT_GET(v.cap_amb, d.u64("cap_amb"));
  return {};
}

void encode_mm(Encoder& e, const MmLayout& v) {
  e.u64(v.start_code);
  e.u64(v.end_code);
  e.u64(v.start_data);
  e.u64(v.end_data);
  e.u64(v.start_brk);
  e.u64(v.brk);
  e.u64(v.start_stack);
  e.u64(v.arg_start);
  e.u64(v.arg_end);
  e.u64(v.env_start);
  e.u64(v.env_end);
  e.u32(static_cast<uint32_t>(v.auxv.size()));
  for (uint64_t a : v.auxv) e.u64(a);
  e.str(v.exe_path);
  encode_file_identity(e, v.exe_id);
}

Status decode_mm(Decoder& d, MmLayout& v) {
  CRKIT_GET(v.start_code, d.u64("start_code"));
  CRKIT_GET(v.end_code, d.u64("end_code"));
  CRKIT_GET(v.start_data, d.u64("start_data"));
  CRKIT_GET(v.end_data, d.u64("end_data"));
  CRKIT_GET(v.start_brk, d.u64("start_brk"));
  CRKIT_GET(v.brk, d.u64("brk"));
  CRKIT_GET(v.start_stack, d.u64("start_stack"));
  CRKIT_GET(v.arg_start, d.u64("arg_start"));
  CRKIT_GET(v.arg_end, d.u64("arg_end"));
  CRKIT_GET(v.env_start, d.u64("env_start"));
  CRKIT_GET(v.env_end, d.u64("env_end"));
  CRKIT_ASSIGN(uint32_t n, read_count(d, "auxv", 8));
  v.auxv.assign(n, 0);
  for (auto& a : v.auxv) CRKIT_GET(a, d.u64("auxv"));
  CRKIT_GET(v.exe_path, d.str("exe_path"));
  CRKIT_TRY(decode_file_identity(d, v.exe_id));
  return {};
}

}  // namespace

void encode(Encoder& e, const ImageInfo& v) {
  e.u32(v.page_size);
  e.u32(v.xsave_size);
  e.u64(v.xfeatures);
  e.i64(v.created_unix);
  e.str(v.hostname);
  e.str(v.kernel_release);
  e.str(v.crkit_version);
  e.u32(v.scope);
  e.i32(v.target);
  e.u32(v.process_count);
}

Status decode(Decoder& d, ImageInfo& v) {
  CRKIT_GET(v.page_size, d.u32("page_size"));
  CRKIT_GET(v.xsave_size, d.u32("xsave_size"));
  CRKIT_GET(v.xfeatures, d.u64("xfeatures"));
  CRKIT_GET(v.created_unix, d.i64("created_unix"));
  CRKIT_GET(v.hostname, d.str("hostname"));
  CRKIT_GET(v.kernel_release, d.str("kernel_release"));
  CRKIT_GET(v.crkit_version, d.str("crkit_version"));
  CRKIT_GET(v.scope, d.u32("scope"));
  CRKIT_GET(v.target, d.i32("target"));
  CRKIT_GET(v.process_count, d.u32("process_count"));
  return {};
}

void encode(Encoder& e, const ProcessRecord& v) {
  e.i32(v.pid);
  e.i32(v.ppid);
  e.i32(v.pgid);
  e.i32(v.sid);
  e.str(v.comm);
  e.str(v.cwd);
  e.str(v.root);
  e.u32(v.umask);
  e.u32(v.personality);
  e.u32(v.was_stopped);
  encode_credentials(e, v.creds);
  encode_mm(e, v.mm);
  e.u32(static_cast<uint32_t>(v.sigactions.size()));
  for (const auto& sa : v.sigactions) {
    e.u64(sa.handler);
    e.u64(sa.flags);
    e.u64(sa.restorer);
    e.u64(sa.mask);
  }
  e.u32(static_cast<uint32_t>(v.itimers.size()));
  for (const auto& it : v.itimers) {
    e.i64(it.interval_sec);
    e.i64(it.interval_usec);
    e.i64(it.value_sec);
    e.i64(it.value_usec);
  }
  e.u32(static_cast<uint32_t>(v.rlimits.size()));
  for (const auto& rl : v.rlimits) {
    e.u64(rl.cur);
    e.u64(rl.max);
  }
  encode_siginfos(e, v.shared_pending);
  e.u32(v.thread_count);
  e.u32(v.dumpable);
  e.u32(v.no_new_privs);
  e.u32(v.exit_signal);
  e.u32(v.pdeath_signal);
}

Status decode(Decoder& d, ProcessRecord& v) {
  CRKIT_GET(v.pid, d.i32("pid"));
  CRKIT_GET(v.ppid, d.i32("ppid"));
  CRKIT_GET(v.pgid, d.i32("pgid"));
  CRKIT_GET(v.sid, d.i32("sid"));
  CRKIT_GET(v.comm, d.str("comm"));
  CRKIT_GET(v.cwd, d.str("cwd"));
  CRKIT_GET(v.root, d.str("root"));
  CRKIT_GET(v.umask, d.u32("umask"));
  CRKIT_GET(v.personality, d.u32("personality"));
  CRKIT_GET(v.was_stopped, d.u32("was_stopped"));
  CRKIT_TRY(decode_credentials(d, v.creds));
  CRKIT_TRY(decode_mm(d, v.mm));
  {
    CRKIT_ASSIGN(uint32_t n, read_count(d, "sigactions", kSigActionSize));
    v.sigactions.assign(n, SigAction{});
    for (auto& sa : v.sigactions) {
      CRKIT_GET(sa.handler, d.u64("sigactions.handler"));
      CRKIT_GET(sa.flags, d.u64("sigactions.flags"));
      CRKIT_GET(sa.restorer, d.u64("sigactions.restorer"));
      CRKIT_GET(sa.mask, d.u64("sigactions.mask"));
    }
  }
  {
    CRKIT_ASSIGN(uint32_t n, read_count(d, "itimers", kItimerValSize));
    v.itimers.assign(n, ItimerVal{});
    for (auto& it : v.itimers) {
      CRKIT_GET(it.interval_sec, d.i64("itimers.interval_sec"));
      CRKIT_GET(it.interval_usec, d.i64("itimers.interval_usec"));
      CRKIT_GET(it.value_sec, d.i64("itimers.value_sec"));
      CRKIT_GET(it.value_usec, d.i64("itimers.value_usec"));
    }
  }
  {
    CRKIT_ASSIGN(uint32_t n, read_count(d, "rlimits", kRLimitSize));
    v.rlimits.assign(n, RLimit{});
    for (auto& rl : v.rlimits) {
      CRKIT_GET(rl.cur, d.u64("rlimits.cur"));
      CRKIT_GET(rl.max, d.u64("rlimits.max"));
    }
  }
  CRKIT_TRY(decode_siginfos(d, "shared_pending", v.shared_pending));
  CRKIT_GET(v.thread_count, d.u32("thread_count"));
  CRKIT_GET(v.dumpable, d.u32("dumpable"));
  CRKIT_GET(v.no_new_privs, d.u32("no_new_privs"));
  if (d.remaining() == 0) return {};  // a version-1 record ends here
  CRKIT_GET(v.exit_signal, d.u32("exit_signal"));
  CRKIT_GET(v.pdeath_signal, d.u32("pdeath_signal"));
  return {};
}

void encode(Encoder& e, const ThreadRecord& v) {
  e.i32(v.pid);
  e.i32(v.tid);
  e.bytes(v.gpregs);
  e.bytes(v.xstate);
  e.u64(v.sigmask);
  encode_siginfos(e, v.pending);
  e.u64(v.altstack_sp);
  e.u64(v.altstack_size);
  e.u32(v.altstack_flags);
  e.u64(v.robust_list);
  e.u64(v.robust_list_len);
  e.u64(v.clear_child_tid);
  e.u64(v.rseq_addr);
  e.u32(v.rseq_len);
  e.u32(v.rseq_sig);
  e.str(v.comm);
}

Status decode(Decoder& d, ThreadRecord& v) {
  CRKIT_GET(v.pid, d.i32("pid"));
  CRKIT_GET(v.tid, d.i32("tid"));
  CRKIT_GET(v.gpregs, d.bytes("gpregs"));
  CRKIT_GET(v.xstate, d.bytes("xstate"));
  CRKIT_GET(v.sigmask, d.u64("sigmask"));
  CRKIT_TRY(decode_siginfos(d, "pending", v.pending));
  CRKIT_GET(v.altstack_sp, d.u64("altstack_sp"));
  CRKIT_GET(v.altstack_size, d.u64("altstack_size"));
  CRKIT_GET(v.altstack_flags, d.u32("altstack_flags"));
  CRKIT_GET(v.robust_list, d.u64("robust_list"));
  CRKIT_GET(v.robust_list_len, d.u64("robust_list_len"));
  CRKIT_GET(v.clear_child_tid, d.u64("clear_child_tid"));
  CRKIT_GET(v.rseq_addr, d.u64("rseq_addr"));
  CRKIT_GET(v.rseq_len, d.u32("rseq_len"));
  CRKIT_GET(v.rseq_sig, d.u32("rseq_sig"));
  CRKIT_GET(v.comm, d.str("comm"));
  return {};
}

void encode(Encoder& e, const VmaRecord& v) {
  e.i32(v.pid);
  e.u64(v.start);
  e.u64(v.end);
  e.u32(v.prot);
  e.u32(v.map_flags);
  e.u32(static_cast<uint32_t>(v.kind));
  e.u32(v.vm_flags);
  e.u64(v.pgoff);
  e.str(v.name);
  encode_file_identity(e, v.file);
  e.u64(v.saved_pages);
}

Status decode(Decoder& d, VmaRecord& v) {
  CRKIT_GET(v.pid, d.i32("pid"));
  CRKIT_GET(v.start, d.u64("start"));
  CRKIT_GET(v.end, d.u64("end"));
  CRKIT_GET(v.prot, d.u32("prot"));
  CRKIT_GET(v.map_flags, d.u32("map_flags"));
  CRKIT_GET(v.kind, read_enum<VmaKind>(d, "kind", vma_kind_name));
  CRKIT_GET(v.vm_flags, d.u32("vm_flags"));
  CRKIT_GET(v.pgoff, d.u64("pgoff"));
  CRKIT_GET(v.name, d.str("name"));
  CRKIT_TRY(decode_file_identity(d, v.file));
  CRKIT_GET(v.saved_pages, d.u64("saved_pages"));
  return {};
}

void encode(Encoder& e, const FdRecord& v) {
  e.i32(v.pid);
  e.i32(v.fd);
  e.u32(static_cast<uint32_t>(v.kind));
  e.u32(v.flags);
  e.u32(v.cloexec);
  e.u64(v.pos);
  e.str(v.path);
  encode_file_identity(e, v.id);
  e.u64(v.size_at_checkpoint);
  e.u32(v.content_id);
  e.u32(v.file_id);
  e.u32(v.attrs);
}

Status decode(Decoder& d, FdRecord& v) {
  CRKIT_GET(v.pid, d.i32("pid"));
  CRKIT_GET(v.fd, d.i32("fd"));
  CRKIT_GET(v.kind, read_enum<FdKind>(d, "kind", fd_kind_name));
  CRKIT_GET(v.flags, d.u32("flags"));
  CRKIT_GET(v.cloexec, d.u32("cloexec"));
  CRKIT_GET(v.pos, d.u64("pos"));
  CRKIT_GET(v.path, d.str("path"));
  CRKIT_TRY(decode_file_identity(d, v.id));
  CRKIT_GET(v.size_at_checkpoint, d.u64("size_at_checkpoint"));
  CRKIT_GET(v.content_id, d.u32("content_id"));
  CRKIT_GET(v.file_id, d.u32("file_id"));
  if (d.remaining() == 0) return {};  // a version-1 record ends here
  CRKIT_GET(v.attrs, d.u32("attrs"));
  return {};
}

void encode(Encoder& e, const FileContentHeader& v) {
  e.u32(v.content_id);
  e.u64(v.offset);
  e.u64(v.total_size);
}

Status decode(Decoder& d, FileContentHeader& v) {
  CRKIT_GET(v.content_id, d.u32("content_id"));
  CRKIT_GET(v.offset, d.u64("offset"));
  CRKIT_GET(v.total_size, d.u64("total_size"));
  return {};
}

void encode(Encoder& e, const PagesHeader& v) {
  e.i32(v.pid);
  e.u64(v.vaddr);
  e.u32(v.npages);
  e.u32(v.compression);
  e.u64(v.raw_size);
}

Status decode(Decoder& d, PagesHeader& v) {
  CRKIT_GET(v.pid, d.i32("pid"));
  CRKIT_GET(v.vaddr, d.u64("vaddr"));
  CRKIT_GET(v.npages, d.u32("npages"));
  CRKIT_GET(v.compression, d.u32("compression"));
  CRKIT_GET(v.raw_size, d.u64("raw_size"));
  return {};
}

void encode(Encoder& e, const PageBatchHeader& v) {
  e.i32(v.pid);
  e.u32(v.compression);
  e.u64(v.raw_size);
  e.u32(static_cast<uint32_t>(v.extents.size()));
  for (const auto& x : v.extents) {
    e.u64(x.vaddr);
    e.u32(x.npages);
  }
}

Status decode(Decoder& d, PageBatchHeader& v) {
  CRKIT_GET(v.pid, d.i32("pid"));
  CRKIT_GET(v.compression, d.u32("compression"));
  CRKIT_GET(v.raw_size, d.u64("raw_size"));
  CRKIT_ASSIGN(uint32_t n, read_count(d, "extents", 12));
  v.extents.assign(n, PageExtent{});
  for (auto& x : v.extents) {
    CRKIT_GET(x.vaddr, d.u64("extents.vaddr"));
    CRKIT_GET(x.npages, d.u32("extents.npages"));
  }
  return {};
}

void encode(Encoder& e, const IndexRecord& v) {
  e.u32(static_cast<uint32_t>(v.entries.size()));
  for (const auto& ie : v.entries) {
    e.u32(static_cast<uint32_t>(ie.type));
    e.u64(ie.offset);
    e.u64(ie.length);
  }
}

Status decode(Decoder& d, IndexRecord& v) {
  CRKIT_ASSIGN(uint32_t n, read_count(d, "entries", kIndexEntrySize));
  v.entries.assign(n, IndexEntry{});
  for (auto& ie : v.entries) {
    CRKIT_GET(ie.type, read_enum<RecordType>(d, "entries.type", record_type_name));
    CRKIT_GET(ie.offset, d.u64("entries.offset"));
    CRKIT_GET(ie.length, d.u64("entries.length"));
  }
  return {};
}

void encode(Encoder& e, const EndRecord& v) {
  e.u64(v.record_count);
  e.u64(v.index_offset);
}

Status decode(Decoder& d, EndRecord& v) {
  CRKIT_GET(v.record_count, d.u64("record_count"));
  CRKIT_GET(v.index_offset, d.u64("index_offset"));
  return {};
}

#undef CRKIT_GET

}  // namespace crkit::image
