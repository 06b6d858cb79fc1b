// The image schema, version 3: the one place that defines what a crkit context file holds.
//
// Layout of a file (written front to back, so it can go to a pipe):
//   FileHeader (16 bytes: magic "CRKITIMG", u32 version, u32 crc32c of the first 12 bytes)
//   Record*    each: RecordHeader (24 bytes) + payload; payload and header have CRC32C
//   Index      record listing (type, offset, length) of every earlier record
//   End        record: number of records and offset of the Index; its presence proves the
//              image is complete
//
// Record order written by the checkpointer (readers rely on metadata preceding pages):
//   ImageInfo, then per process (tree order: the root first, every parent before its
//   children): Process, Thread*, Vma*, Fd*; then FileContent* (of all processes), then
//   PageBatch* (of all processes, keyed by pid, in any order: they are produced in
//   parallel), then Index, End. Images of version 1 and 2 hold Pages records instead.
//
// Version history: 1 = one process; 2 = process trees (ProcessRecord.exit_signal and
// .pdeath_signal, FdKind::Fifo, FdRecord.attrs); 3 = page data in PageBatch records, which may
// be compressed. A reader accepts all three; fields an older record lacks take their defaults.
//
// All integers are little-endian. Strings and byte blobs are u32 length + bytes. Vectors are
// u32 count + elements. Encoding/decoding lives in codec.hpp/.cpp.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace crkit::image {

inline constexpr char kMagic[8] = {'C', 'R', 'K', 'I', 'T', 'I', 'M', 'G'};
inline constexpr uint32_t kVersion = 3;
inline constexpr uint32_t kMinVersion = 1;  // oldest version a reader accepts
inline constexpr size_t kFileHeaderSize = 16;
inline constexpr size_t kRecordHeaderSize = 24;
// Upper bound on one record's payload; larger lengths mean a corrupted header.
inline constexpr uint64_t kMaxRecordPayload = 1ull << 30;

enum class RecordType : uint32_t {
  ImageInfo = 1,
  Process = 2,
  Thread = 3,
  Vma = 4,
  Fd = 5,
  FileContent = 6,
  Pages = 7,      // versions 1 and 2
  PageBatch = 8,  // since version 3
  Index = 100,
  End = 101,
};
const char* record_type_name(RecordType t);

// RecordHeader on disk: u32 type, u32 flags, u64 payload_length, u32 payload_crc32c,
// u32 header_crc32c (covers the preceding 20 bytes).
struct RecordHeader {
  RecordType type{};
  uint32_t flags = 0;
  uint64_t length = 0;
  uint32_t payload_crc = 0;
  uint32_t header_crc = 0;
};

struct ImageInfo {
  uint32_t page_size = 4096;
  uint32_t xsave_size = 0;   // size of the NT_X86_XSTATE blobs in Thread records
  uint64_t xfeatures = 0;    // XCR0 of the checkpointing machine
  int64_t created_unix = 0;  // seconds since the epoch
  std::string hostname;
  std::string kernel_release;  // uname -r
  std::string crkit_version;
  uint32_t scope = 0;  // BLCR CR_SCOPE_* of the request
  int32_t target = 0;  // the id given on the command line
  uint32_t process_count = 0;
};

// Identity of a file referenced by path, checked at restart.
struct FileIdentity {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t size = 0;
  int64_t mtime_sec = 0;
  int64_t mtime_nsec = 0;
  uint32_t mode = 0;  // st_mode (type and permission bits)
};

// Kernel's struct sigaction layout for rt_sigaction on x86-64.
struct SigAction {
  uint64_t handler = 0;  // SIG_DFL = 0, SIG_IGN = 1, else address
  uint64_t flags = 0;
  uint64_t restorer = 0;
  uint64_t mask = 0;
};

struct ItimerVal {
  int64_t interval_sec = 0, interval_usec = 0, value_sec = 0, value_usec = 0;
};

struct RLimit {
  uint64_t cur = 0, max = 0;
};

// A siginfo_t as the kernel gives it (PTRACE_PEEKSIGINFO), 128 bytes.
struct SigInfo {
  std::array<uint8_t, 128> raw{};
};

struct Credentials {
  uint32_t uid = 0, euid = 0, suid = 0, fsuid = 0;
  uint32_t gid = 0, egid = 0, sgid = 0, fsgid = 0;
  std::vector<uint32_t> groups;
  uint64_t cap_inh = 0, cap_prm = 0, cap_eff = 0, cap_bnd = 0, cap_amb = 0;
};

// The mm_struct fields restored with prctl(PR_SET_MM_MAP).
struct MmLayout {
  uint64_t start_code = 0, end_code = 0, start_data = 0, end_data = 0;
  uint64_t start_brk = 0, brk = 0, start_stack = 0;
  uint64_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;
  std::vector<uint64_t> auxv;  // pairs (type, value), ending with AT_NULL
  std::string exe_path;
  FileIdentity exe_id;
};

struct ProcessRecord {
  int32_t pid = 0, ppid = 0, pgid = 0, sid = 0;
  std::string comm;
  std::string cwd;
  std::string root;
  uint32_t umask = 022;
  uint32_t personality = 0;
  uint32_t was_stopped = 0;  // 1 if the process was in group-stop (SIGSTOP) when checkpointed
  Credentials creds;
  MmLayout mm;
  std::vector<SigAction> sigactions;  // index = signal - 1, 64 entries
  std::vector<ItimerVal> itimers;     // ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF
  std::vector<RLimit> rlimits;        // RLIMIT_* order, RLIM_NLIMITS entries
  std::vector<SigInfo> shared_pending;
  uint32_t thread_count = 0;
  uint32_t dumpable = 1;      // prctl(PR_GET_DUMPABLE)
  uint32_t no_new_privs = 0;  // prctl(PR_GET_NO_NEW_PRIVS)
  // Since version 2:
  uint32_t exit_signal = 17;   // signal the parent gets when the process ends (SIGCHLD)
  uint32_t pdeath_signal = 0;  // prctl(PR_GET_PDEATHSIG)
};

struct ThreadRecord {
  int32_t pid = 0;  // owning process (tgid)
  int32_t tid = 0;
  std::vector<uint8_t> gpregs;   // struct user_regs_struct (NT_PRSTATUS), 216 bytes
  std::vector<uint8_t> xstate;   // NT_X86_XSTATE blob (FPU/SSE/AVX...)
  uint64_t sigmask = 0;          // blocked signals
  std::vector<SigInfo> pending;  // per-thread pending signals
  uint64_t altstack_sp = 0;
  uint64_t altstack_size = 0;
  uint32_t altstack_flags = 0;  // SS_DISABLE etc.
  uint64_t robust_list = 0;
  uint64_t robust_list_len = 0;
  uint64_t clear_child_tid = 0;
  uint64_t rseq_addr = 0;
  uint32_t rseq_len = 0;
  uint32_t rseq_sig = 0;
  std::string comm;
};

enum class VmaKind : uint32_t {
  Anon = 1,         // private anonymous (includes data/bss growth, thread stacks)
  Heap = 2,         // [heap]
  Stack = 3,        // [stack]
  FilePrivate = 4,  // MAP_PRIVATE of a file (text, data, libraries)
  FileShared = 5,   // MAP_SHARED of a file
  AnonShared = 6,   // MAP_SHARED|MAP_ANONYMOUS (shmem)
  Vdso = 7,         // [vdso]: the kernel's; moved into place at restart, contents not saved
  Vvar = 8,         // [vvar], [vvar_vclock]: kernel data pages, moved together with [vdso]
};
const char* vma_kind_name(VmaKind k);

// VMA flags (bits of VmaRecord::vm_flags) taken from /proc/PID/smaps VmFlags.
inline constexpr uint32_t kVmGrowsDown = 1u << 0;
inline constexpr uint32_t kVmDontDump = 1u << 1;
inline constexpr uint32_t kVmFileDeleted = 1u << 2;  // backing file was unlinked
inline constexpr uint32_t kVmLocked = 1u << 3;       // mlock()ed
inline constexpr uint32_t kVmWipeOnFork = 1u << 4;   // MADV_WIPEONFORK
inline constexpr uint32_t kVmDontFork = 1u << 5;     // MADV_DONTFORK
inline constexpr uint32_t kVmHugePage = 1u << 6;     // MADV_HUGEPAGE
inline constexpr uint32_t kVmNoHugePage = 1u << 7;   // MADV_NOHUGEPAGE
inline constexpr uint32_t kVmMayWrite = 1u << 8;     // may be made writable (VM_MAYWRITE)

struct VmaRecord {
  int32_t pid = 0;
  uint64_t start = 0, end = 0;
  uint32_t prot = 0;       // PROT_* bits
  uint32_t map_flags = 0;  // MAP_PRIVATE or MAP_SHARED (plus MAP_ANONYMOUS)
  VmaKind kind = VmaKind::Anon;
  uint32_t vm_flags = 0;     // kVm* bits
  uint64_t pgoff = 0;        // file offset in bytes
  std::string name;          // path for file mappings, "[heap]" etc. for special ones
  FileIdentity file;         // identity of the backing file (file mappings)
  uint64_t saved_pages = 0;  // populated pages considered for saving (all-zero anonymous
                             // pages among them are left out of the Pages records: holes)
};

enum class FdKind : uint32_t {
  Regular = 1,   // regular file by path, truncated back to size_at_checkpoint if written
  Unlinked = 2,  // regular file already unlinked: content saved in FileContent records
  Directory = 3,
  CharDevice = 4,    // /dev/null, /dev/zero, /dev/urandom, ... (memory devices, major 1)
  Tty = 5,           // terminal: reopened as the restarter's terminal
  ExternalPipe = 6,  // pipe/FIFO end leading outside the image: becomes cr_restart's stdin/stdout
  Socket = 7,        // not saved: closed after restart (BLCR semantics)
  Pipe = 8,          // end of a pipe recreated with its data: both ends are in the image, or
                     // the other end is closed everywhere (a reader still draining a pipe
                     // whose writers are gone). id.ino names the pipe, size_at_checkpoint is
                     // its F_GETPIPE_SZ capacity, content_id its buffered data (the same on
                     // every fd record of the pipe; 0 when it was empty)
  Fifo = 9,          // named FIFO, reopened by path; data, capacity and content_id as for Pipe
                     // when both ends are in the image. kFdAttrUnlinked: the path was removed
                     // (a FIFO is made there again, and removed once opened)
};
const char* fd_kind_name(FdKind k);

struct FdRecord {
  int32_t pid = 0;
  int32_t fd = 0;
  FdKind kind = FdKind::Regular;
  uint32_t flags = 0;  // open(2) flags as in fdinfo, without O_CLOEXEC
  uint32_t cloexec = 0;
  uint64_t pos = 0;
  std::string path;
  FileIdentity id;
  uint64_t size_at_checkpoint = 0;
  uint32_t content_id = 0;  // Unlinked: id of the FileContent records holding the data
  uint32_t file_id = 0;     // open file description: fds with the same file_id share one
                            // (dup/inheritance: offset and status flags are shared), in one
                            // process or across the processes of the image
  uint32_t attrs = 0;       // kFdAttr* bits (since version 2)
};
inline constexpr uint32_t kFdAttrUnlinked = 1u << 0;  // Fifo: its path no longer existed

// A chunk of a saved file's content (unlinked files). Payload: header fields, then data.
struct FileContentHeader {
  uint32_t content_id = 0;
  uint64_t offset = 0;
  uint64_t total_size = 0;
};

// A run of consecutive saved pages. Payload: header fields, then (compressed) data.
inline constexpr uint32_t kCompressNone = 0;
struct PagesHeader {
  int32_t pid = 0;
  uint64_t vaddr = 0;
  uint32_t npages = 0;
  uint32_t compression = kCompressNone;
  uint64_t raw_size = 0;  // npages * page_size
};

// Since version 3: a batch of pages of one process, possibly compressed (page_codec.hpp).
// Payload: header fields, then the data: the pages of the extents in order, as one block
// compressed with `compression` (stored raw when compression is None).
struct PageExtent {
  uint64_t vaddr = 0;
  uint32_t npages = 0;
  bool operator==(const PageExtent&) const = default;
};
struct PageBatchHeader {
  int32_t pid = 0;
  uint32_t compression = 0;  // image::Compression
  uint64_t raw_size = 0;     // sum of the extents' npages * page_size
  std::vector<PageExtent> extents;
};

struct IndexEntry {
  RecordType type{};
  uint64_t offset = 0;  // file offset of the RecordHeader
  uint64_t length = 0;  // payload length
};
struct IndexRecord {
  std::vector<IndexEntry> entries;
};

struct EndRecord {
  uint64_t record_count = 0;  // records before Index
  uint64_t index_offset = 0;
};

}  // namespace crkit::image
