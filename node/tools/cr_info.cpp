// cr_info: verify a crkit context file and describe what it holds.
//
//   cr_info [--json] [-q] FILE | - | -F FD
//
// The whole image is read and verified (checksums, index, End record) before anything is
// printed, so a bad image produces only the error, "cr_info: <message>" on stderr, and the exit
// status is the low 8 bits of the error code (EIO = 5, EINVAL = 22).
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/user.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/cr_errors.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "image/codec.hpp"
#include "image/image_file.hpp"
#include "image/page_codec.hpp"
#include "image/schema.hpp"

#ifndef CRKIT_VERSION
#define CRKIT_VERSION "0.1.0"
#endif

namespace {

using namespace crkit;
using namespace crkit::image;
using nlohmann::json;

constexpr const char* kProg = "cr_info";

// ---------------------------------------------------------------------------------------------
// Loading

struct PageTotals {
  uint64_t records = 0;
  uint64_t pages = 0;
  uint64_t raw_bytes = 0;                 // uncompressed size
  uint64_t stored_bytes = 0;              // size in the image
  std::map<uint32_t, uint64_t> by_codec;  // PageBatch records per compression
};

// "lz4 (12 batches), none (3 batches)"
std::string codec_summary(const PageTotals& t) {
  std::string out;
  for (const auto& [c, n] : t.by_codec)
    out += fmt::format("{}{} ({} batches)", out.empty() ? "" : ", ",
                       compression_name(static_cast<Compression>(c)), n);
  return out;
}

struct ImageData {
  std::string name;
  uint32_t version = 0;
  uint64_t image_bytes = 0;
  uint64_t records = 0;  // data records (Index and End not counted)
  std::optional<ImageInfo> info;
  std::vector<ProcessRecord> processes;
  std::vector<ThreadRecord> threads;
  std::vector<VmaRecord> vmas;
  std::vector<FdRecord> fds;
  std::map<int32_t, PageTotals> pages;         // by pid
  std::map<uint32_t, uint64_t> content_bytes;  // FileContent bytes by content_id
  PageTotals total;
  // Address ranges [start, end) of saved page runs, by pid (sorted by finish()).
  std::map<int32_t, std::vector<std::pair<uint64_t, uint64_t>>> runs;

  uint64_t pages_in_image(const VmaRecord& v) const;

  uint32_t page_size() const { return info ? info->page_size : 4096; }
};

template <class T>
Status load_into(const RawRecord& r, const std::string& name, std::vector<T>& out) {
  CRKIT_ASSIGN(T v, decode_record<T>(r, name));
  out.push_back(std::move(v));
  return {};
}

Result<ImageData> load_image(int fd, const std::string& name) {
  ImageData img;
  img.name = name;
  ImageReader reader(fd, name);
  CRKIT_TRY(reader.read_file_header());
  img.version = reader.version();
  for (;;) {
    CRKIT_ASSIGN(std::optional<RawRecord> rec, reader.next());
    if (!rec) break;
    const RawRecord& r = *rec;
    ++img.records;
    switch (r.header.type) {
      case RecordType::ImageInfo: {
        CRKIT_ASSIGN(ImageInfo info, decode_record<ImageInfo>(r, name));
        img.info = std::move(info);
        break;
      }
      case RecordType::Process:
        CRKIT_TRY(load_into(r, name, img.processes));
        break;
      case RecordType::Thread:
        CRKIT_TRY(load_into(r, name, img.threads));
        break;
      case RecordType::Vma:
        CRKIT_TRY(load_into(r, name, img.vmas));
        break;
      case RecordType::Fd:
        CRKIT_TRY(load_into(r, name, img.fds));
        break;
      case RecordType::FileContent: {
        CRKIT_ASSIGN(auto fc, decode_file_content(r, name));
        img.content_bytes[fc.first.content_id] += fc.second.size();
        break;
      }
      case RecordType::Pages: {
        CRKIT_ASSIGN(auto pg, decode_pages(r, name));
        uint64_t run_bytes = pg.first.raw_size;
        img.runs[pg.first.pid].emplace_back(pg.first.vaddr, pg.first.vaddr + run_bytes);
        for (PageTotals* t : {&img.pages[pg.first.pid], &img.total}) {
          t->records += 1;
          t->pages += pg.first.npages;
          t->raw_bytes += pg.first.raw_size;
          t->stored_bytes += pg.second.size();
        }
        break;
      }
      case RecordType::PageBatch: {
        CRKIT_ASSIGN(auto pb, decode_page_batch(r, name));
        for (const auto& x : pb.first.extents)
          img.runs[pb.first.pid].emplace_back(x.vaddr, x.vaddr + x.npages * 4096ull);
        for (PageTotals* t : {&img.pages[pb.first.pid], &img.total}) {
          t->records += 1;
          for (const auto& x : pb.first.extents) t->pages += x.npages;
          t->raw_bytes += pb.first.raw_size;
          t->stored_bytes += pb.second.size();
          t->by_codec[pb.first.compression] += 1;
        }
        break;
      }
      default:
        break;  // Index and End are consumed by the reader
    }
  }
  img.image_bytes = reader.offset();
  for (auto& [pid, v] : img.runs) std::sort(v.begin(), v.end());
  return img;
}

// Pages of the VMA stored in Pages records (the record's saved_pages counts populated pages,
// some of which, all-zero anonymous ones, are left out of the image).
uint64_t ImageData::pages_in_image(const VmaRecord& v) const {
  auto it = runs.find(v.pid);
  if (it == runs.end()) return 0;
  const auto& rs = it->second;
  // First run that could overlap: runs are sorted by start and do not overlap each other.
  auto r = std::lower_bound(rs.begin(), rs.end(), std::make_pair(v.start, uint64_t{0}));
  if (r != rs.begin() && std::prev(r)->second > v.start) --r;
  uint64_t bytes = 0;
  for (; r != rs.end() && r->first < v.end; ++r) {
    uint64_t lo = std::max(r->first, v.start), hi = std::min(r->second, v.end);
    if (hi > lo) bytes += hi - lo;
  }
  return bytes / page_size();
}

// ---------------------------------------------------------------------------------------------
// Formatting helpers

std::string hex(uint64_t v) {
  return fmt::format("0x{:x}", v);
}

std::string human_size(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024.0;
  size_t u = 0;
  while (v >= 1024.0 && u + 1 < std::size(units)) {
    v /= 1024.0;
    ++u;
  }
  return fmt::format("{:.1f} {}", v, units[u]);
}

std::string utc_time(int64_t t) {
  time_t tt = static_cast<time_t>(t);
  struct tm tm;
  if (!gmtime_r(&tt, &tm)) return std::to_string(t);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string signal_name(int sig) {
  if (const char* a = sigabbrev_np(sig)) return std::string("SIG") + a;
  if (sig >= SIGRTMIN && sig <= SIGRTMAX) return fmt::format("SIGRTMIN+{}", sig - SIGRTMIN);
  return fmt::format("SIG{}", sig);
}

// BLCR's cr_scope_t.
const char* scope_name(uint32_t s) {
  switch (s) {
    case 1:
      return "process";
    case 2:
      return "process group";
    case 3:
      return "session";
    case 4:
      return "process tree";
  }
  return "unknown";
}

const char* itimer_name(size_t which) {
  switch (which) {
    case 0:
      return "ITIMER_REAL";
    case 1:
      return "ITIMER_VIRTUAL";
    case 2:
      return "ITIMER_PROF";
  }
  return "ITIMER_?";
}

bool itimer_set(const ItimerVal& t) {
  return t.interval_sec || t.interval_usec || t.value_sec || t.value_usec;
}

std::string perms(const VmaRecord& v) {
  std::string p;
  p += (v.prot & PROT_READ) ? 'r' : '-';
  p += (v.prot & PROT_WRITE) ? 'w' : '-';
  p += (v.prot & PROT_EXEC) ? 'x' : '-';
  p += (v.map_flags & MAP_SHARED) ? 's' : 'p';
  return p;
}

std::string open_flags(uint32_t flags, bool cloexec) {
  std::string s;
  switch (flags & O_ACCMODE) {
    case O_RDONLY:
      s = "rdonly";
      break;
    case O_WRONLY:
      s = "wronly";
      break;
    case O_RDWR:
      s = "rdwr";
      break;
    default:
      s = "accmode3";
      break;
  }
  struct Bit {
    uint32_t bit;
    const char* name;
  };
  // The kernel's O_LARGEFILE (0100000) is 0 in glibc's x86-64 headers, so spell it out.
  static const Bit bits[] = {
      {O_APPEND, "append"}, {O_NONBLOCK, "nonblock"},   {O_SYNC, "sync"},
      {O_DSYNC, "dsync"},   {O_DIRECT, "direct"},       {O_NOATIME, "noatime"},
      {O_PATH, "path"},     {O_DIRECTORY, "directory"}, {0100000, "largefile"},
  };
  uint32_t known = O_ACCMODE;
  for (const Bit& b : bits) {
    known |= b.bit;
    // O_SYNC includes the O_DSYNC bit; name only the stronger one.
    if (b.bit == O_DSYNC && (flags & O_SYNC) == O_SYNC) continue;
    if ((flags & b.bit) == b.bit) s += std::string("|") + b.name;
  }
  if (flags & ~known) s += fmt::format("|0{:o}", flags & ~known);
  if (cloexec) s += "|cloexec";
  return s;
}

struct Regs {
  bool valid = false;
  uint64_t rip = 0, rsp = 0;
};

Regs thread_regs(const ThreadRecord& t) {
  Regs r;
  if (t.gpregs.size() < sizeof(user_regs_struct)) return r;
  user_regs_struct u;
  std::memcpy(&u, t.gpregs.data(), sizeof u);
  r.valid = true;
  r.rip = u.rip;
  r.rsp = u.rsp;
  return r;
}

std::vector<int> pending_signals(const std::vector<SigInfo>& v) {
  std::vector<int> out;
  for (const SigInfo& si : v) {
    int signo;
    std::memcpy(&signo, si.raw.data(), sizeof signo);
    out.push_back(signo);
  }
  return out;
}

bool has_altstack(const ThreadRecord& t) {
  return !(t.altstack_flags & SS_DISABLE) && t.altstack_size != 0;
}

// ---------------------------------------------------------------------------------------------
// Text output

std::string join_signals(const std::vector<int>& sigs) {
  if (sigs.empty()) return "-";
  std::string s;
  for (int sig : sigs) {
    if (!s.empty()) s += ",";
    s += std::to_string(sig);
  }
  return s;
}

void print_text(const ImageData& img) {
  const uint32_t page_size = img.page_size();
  fmt::print("crkit image {} (format version {}, {} bytes, {} records)\n", img.name, img.version,
             img.image_bytes, img.records);
  if (img.info) {
    const ImageInfo& i = *img.info;
    fmt::print("  created:      {}\n", utc_time(i.created_unix));
    fmt::print("  host:         {}\n", i.hostname);
    fmt::print("  kernel:       {}\n", i.kernel_release);
    fmt::print("  crkit:        {}\n", i.crkit_version);
    fmt::print("  page size:    {}\n", i.page_size);
    fmt::print("  xsave:        {} bytes, xfeatures {}\n", i.xsave_size, hex(i.xfeatures));
    fmt::print("  scope:        {} (target {})\n", scope_name(i.scope), i.target);
    fmt::print("  processes:    {}\n", i.process_count);
  } else {
    fmt::print("  (no ImageInfo record)\n");
  }
  fmt::print("  saved memory: {} pages, {}\n", img.total.pages, human_size(img.total.raw_bytes));

  for (const ProcessRecord& p : img.processes) {
    fmt::print("\nProcess {} ({})\n", p.pid, p.comm);
    fmt::print("  ppid {}  pgid {}  sid {}\n", p.ppid, p.pgid, p.sid);
    if (p.pdeath_signal)
      fmt::print("  parent-death signal: {}\n", signal_name(static_cast<int>(p.pdeath_signal)));
    fmt::print("  exe:        {}\n", p.mm.exe_path);
    fmt::print("  cwd:        {}\n", p.cwd);
    if (!p.root.empty() && p.root != "/") fmt::print("  root:       {}\n", p.root);
    fmt::print("  uid/gid:    {}/{}", p.creds.uid, p.creds.gid);
    if (p.creds.euid != p.creds.uid || p.creds.egid != p.creds.gid)
      fmt::print(" (effective {}/{})", p.creds.euid, p.creds.egid);
    fmt::print("\n");
    fmt::print("  threads:    {}\n", p.thread_count);
    fmt::print("  stopped:    {}\n", p.was_stopped ? "yes" : "no");

    bool any = false;
    for (size_t i = 0; i < p.sigactions.size(); ++i) {
      const SigAction& sa = p.sigactions[i];
      if (sa.handler == 0) continue;  // SIG_DFL
      if (!any) fmt::print("  signal handlers:\n");
      any = true;
      int sig = static_cast<int>(i) + 1;
      if (sa.handler == 1)
        fmt::print("    {:<12} SIG_IGN\n", signal_name(sig));
      else
        fmt::print("    {:<12} handler {}  flags {}  mask {}\n", signal_name(sig), hex(sa.handler),
                   hex(sa.flags), hex(sa.mask));
    }
    any = false;
    for (size_t i = 0; i < p.itimers.size(); ++i) {
      const ItimerVal& t = p.itimers[i];
      if (!itimer_set(t)) continue;
      if (!any) fmt::print("  itimers:\n");
      any = true;
      fmt::print("    {:<15} value {}.{:06} s  interval {}.{:06} s\n", itimer_name(i), t.value_sec,
                 t.value_usec, t.interval_sec, t.interval_usec);
    }
    if (!p.shared_pending.empty())
      fmt::print("  pending:    {} (process-wide)\n",
                 join_signals(pending_signals(p.shared_pending)));

    fmt::print("  threads:\n");
    fmt::print("    {:<8} {:<16} {:<18} {:<18} {:<18} {:<10} {:<29} {}\n", "TID", "COMM", "RIP",
               "RSP", "SIGMASK", "PENDING", "RSEQ (ADDR/LEN/SIG)", "ALTSTACK");
    for (const ThreadRecord& t : img.threads) {
      if (t.pid != p.pid) continue;
      Regs r = thread_regs(t);
      std::string rseq =
          t.rseq_addr ? fmt::format("{}/{}/{}", hex(t.rseq_addr), t.rseq_len, hex(t.rseq_sig))
                      : "-";
      std::string alt =
          has_altstack(t) ? fmt::format("{}+{}", hex(t.altstack_sp), t.altstack_size) : "-";
      fmt::print("    {:<8} {:<16} {:<18} {:<18} {:<18} {:<10} {:<29} {}\n", t.tid, t.comm,
                 r.valid ? hex(r.rip) : "?", r.valid ? hex(r.rsp) : "?", hex(t.sigmask),
                 join_signals(pending_signals(t.pending)), rseq, alt);
    }

    fmt::print("  memory map:\n");
    fmt::print("    {:<33} {:<5} {:<12} {:>10} {:>9} {:>9} {:>10}  {}\n", "START-END", "PERMS",
               "KIND", "SIZE", "POPULATED", "SAVED", "SAVED SIZE", "NAME");
    for (const VmaRecord& v : img.vmas) {
      if (v.pid != p.pid) continue;
      std::string name = v.name;
      if (v.vm_flags & kVmFileDeleted) name += " (deleted)";
      uint64_t in_image = img.pages_in_image(v);
      fmt::print("    {:016x}-{:016x} {:<5} {:<12} {:>10} {:>9} {:>9} {:>10}  {}\n", v.start, v.end,
                 perms(v), vma_kind_name(v.kind), human_size(v.end - v.start), v.saved_pages,
                 in_image, human_size(in_image * page_size), name);
    }
    auto it = img.pages.find(p.pid);
    PageTotals pt = it == img.pages.end() ? PageTotals{} : it->second;
    fmt::print("  saved memory: {} pages, {}", pt.pages, human_size(pt.raw_bytes));
    if (pt.stored_bytes != pt.raw_bytes) fmt::print(" ({} stored)", human_size(pt.stored_bytes));
    if (!pt.by_codec.empty()) fmt::print("; compression {}", codec_summary(pt));
    fmt::print("\n");

    fmt::print("  files:\n");
    fmt::print("    {:<5} {:<14} {:<28} {:>12}  {}\n", "FD", "KIND", "FLAGS", "POS", "PATH");
    for (const FdRecord& f : img.fds) {
      if (f.pid != p.pid) continue;
      std::string path = f.path;
      if (f.kind == FdKind::Unlinked) {
        auto c = img.content_bytes.find(f.content_id);
        path += fmt::format(" (unlinked, {} saved)",
                            human_size(c == img.content_bytes.end() ? 0 : c->second));
      }
      if (f.kind == FdKind::Pipe || f.kind == FdKind::Fifo) {
        auto c = f.content_id ? img.content_bytes.find(f.content_id) : img.content_bytes.end();
        path += fmt::format(" ({}{} buffered, capacity {})",
                            f.attrs & kFdAttrUnlinked ? "removed, " : "",
                            human_size(c == img.content_bytes.end() ? 0 : c->second),
                            human_size(f.size_at_checkpoint));
      }
      fmt::print("    {:<5} {:<14} {:<28} {:>12}  {}\n", f.fd, fd_kind_name(f.kind),
                 open_flags(f.flags, f.cloexec != 0), f.pos, path);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// JSON output

json to_json(const ImageData& img) {
  const uint32_t page_size = img.page_size();
  json j;
  j["image"] = img.name;
  j["format_version"] = img.version;
  j["image_bytes"] = img.image_bytes;
  j["records"] = img.records;
  if (img.info) {
    const ImageInfo& i = *img.info;
    j["info"] = {
        {"page_size", i.page_size},
        {"xsave_size", i.xsave_size},
        {"xfeatures", hex(i.xfeatures)},
        {"created_unix", i.created_unix},
        {"created", utc_time(i.created_unix)},
        {"hostname", i.hostname},
        {"kernel_release", i.kernel_release},
        {"crkit_version", i.crkit_version},
        {"scope", i.scope},
        {"scope_name", scope_name(i.scope)},
        {"target", i.target},
        {"process_count", i.process_count},
    };
  } else {
    j["info"] = nullptr;
  }

  json procs = json::array();
  for (const ProcessRecord& p : img.processes) {
    json handlers = json::array();
    for (size_t i = 0; i < p.sigactions.size(); ++i) {
      const SigAction& sa = p.sigactions[i];
      if (sa.handler == 0) continue;
      int sig = static_cast<int>(i) + 1;
      handlers.push_back({{"signal", sig},
                          {"name", signal_name(sig)},
                          {"handler", sa.handler == 1 ? std::string("SIG_IGN") : hex(sa.handler)},
                          {"flags", hex(sa.flags)},
                          {"restorer", hex(sa.restorer)},
                          {"mask", hex(sa.mask)}});
    }
    json timers = json::array();
    for (size_t i = 0; i < p.itimers.size(); ++i) {
      const ItimerVal& t = p.itimers[i];
      if (!itimer_set(t)) continue;
      timers.push_back({{"which", itimer_name(i)},
                        {"value_sec", t.value_sec},
                        {"value_usec", t.value_usec},
                        {"interval_sec", t.interval_sec},
                        {"interval_usec", t.interval_usec}});
    }
    auto it = img.pages.find(p.pid);
    PageTotals pt = it == img.pages.end() ? PageTotals{} : it->second;
    procs.push_back({
        {"pid", p.pid},
        {"ppid", p.ppid},
        {"pgid", p.pgid},
        {"sid", p.sid},
        {"exit_signal", p.exit_signal},
        {"pdeath_signal", p.pdeath_signal},
        {"comm", p.comm},
        {"exe", p.mm.exe_path},
        {"cwd", p.cwd},
        {"root", p.root},
        {"umask", p.umask},
        {"uid", p.creds.uid},
        {"euid", p.creds.euid},
        {"gid", p.creds.gid},
        {"egid", p.creds.egid},
        {"groups", p.creds.groups},
        {"thread_count", p.thread_count},
        {"was_stopped", p.was_stopped != 0},
        {"signal_handlers", handlers},
        {"itimers", timers},
        {"shared_pending", pending_signals(p.shared_pending)},
        {"saved_pages", pt.pages},
        {"saved_bytes", pt.raw_bytes},
        {"stored_bytes", pt.stored_bytes},
    });
  }
  j["processes"] = procs;

  json threads = json::array();
  for (const ThreadRecord& t : img.threads) {
    Regs r = thread_regs(t);
    threads.push_back({
        {"pid", t.pid},
        {"tid", t.tid},
        {"comm", t.comm},
        {"rip", r.valid ? json(hex(r.rip)) : json(nullptr)},
        {"rsp", r.valid ? json(hex(r.rsp)) : json(nullptr)},
        {"sigmask", hex(t.sigmask)},
        {"pending", pending_signals(t.pending)},
        {"rseq", {{"addr", hex(t.rseq_addr)}, {"len", t.rseq_len}, {"sig", hex(t.rseq_sig)}}},
        {"altstack",
         {{"sp", hex(t.altstack_sp)}, {"size", t.altstack_size}, {"flags", t.altstack_flags}}},
        {"xstate_bytes", t.xstate.size()},
    });
  }
  j["threads"] = threads;

  json vmas = json::array();
  for (const VmaRecord& v : img.vmas) {
    vmas.push_back({
        {"pid", v.pid},
        {"start", hex(v.start)},
        {"end", hex(v.end)},
        {"perms", perms(v)},
        {"prot", v.prot},
        {"map_flags", v.map_flags},
        {"kind", vma_kind_name(v.kind)},
        {"vm_flags", v.vm_flags},
        {"pgoff", v.pgoff},
        {"name", v.name},
        {"saved_pages", v.saved_pages},  // populated pages considered (VmaRecord::saved_pages)
        {"pages_in_image", img.pages_in_image(v)},
        {"bytes_in_image", img.pages_in_image(v) * page_size},
    });
  }
  j["vmas"] = vmas;

  json fds = json::array();
  for (const FdRecord& f : img.fds) {
    json o = {
        {"pid", f.pid},
        {"fd", f.fd},
        {"kind", fd_kind_name(f.kind)},
        {"flags", f.flags},
        {"flags_text", open_flags(f.flags, f.cloexec != 0)},
        {"cloexec", f.cloexec != 0},
        {"pos", f.pos},
        {"path", f.path},
        {"size_at_checkpoint", f.size_at_checkpoint},
    };
    if (f.kind == FdKind::Unlinked) {
      auto c = img.content_bytes.find(f.content_id);
      o["content_id"] = f.content_id;
      o["content_bytes"] = c == img.content_bytes.end() ? 0 : c->second;
    }
    if (f.kind == FdKind::Pipe || f.kind == FdKind::Fifo) {
      auto c = f.content_id ? img.content_bytes.find(f.content_id) : img.content_bytes.end();
      o["pipe_ino"] = f.id.ino;
      o["buffered_bytes"] = c == img.content_bytes.end() ? 0 : c->second;
      o["capacity"] = f.size_at_checkpoint;
    }
    if (f.kind == FdKind::Fifo) o["unlinked"] = (f.attrs & kFdAttrUnlinked) != 0;
    o["file_id"] = f.file_id;
    fds.push_back(std::move(o));
  }
  j["fds"] = fds;

  j["saved_pages"] = img.total.pages;
  j["saved_bytes"] = img.total.raw_bytes;
  j["stored_bytes"] = img.total.stored_bytes;
  nlohmann::json codecs = nlohmann::json::object();
  for (const auto& [c, n] : img.total.by_codec)
    codecs[compression_name(static_cast<Compression>(c))] = n;
  j["page_batches_by_compression"] = codecs;
  return j;
}

// ---------------------------------------------------------------------------------------------
// main

void usage(FILE* out) {
  std::fprintf(out,
               "Usage: %s [OPTIONS] FILE\n"
               "       %s [OPTIONS] -F FD\n"
               "Verify a crkit context file and describe its contents.\n"
               "FILE may be '-' for standard input.\n"
               "\n"
               "  -F, --fd FD    read the image from file descriptor FD\n"
               "  -j, --json     print one JSON document instead of text\n"
               "  -q, --quiet    only verify the image: print nothing unless it is bad\n"
               "  -h, --help     print this help and exit\n"
               "      --version  print the version and exit\n"
               "\n"
               "Exit status: 0 if the image is valid, otherwise the error code's low 8 bits\n"
               "(5 = EIO: corrupted or truncated image, 22 = EINVAL: not a crkit image).\n",
               kProg, kProg);
}

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "%s: %s\nTry '%s --help' for more information.\n", kProg, msg.c_str(),
               kProg);
  return exit_code_of(EINVAL);
}

}  // namespace

int main(int argc, char** argv) {
  bool json_out = false;
  bool quiet = false;
  std::optional<int> from_fd;

  enum { kOptVersion = 1000 };
  static const struct option longopts[] = {
      {"json", no_argument, nullptr, 'j'},
      {"quiet", no_argument, nullptr, 'q'},
      {"fd", required_argument, nullptr, 'F'},
      {"help", no_argument, nullptr, 'h'},
      {"version", no_argument, nullptr, kOptVersion},
      {nullptr, 0, nullptr, 0},
  };
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":jqF:h", longopts, nullptr)) != -1) {
    switch (c) {
      case 'j':
        json_out = true;
        break;
      case 'q':
        quiet = true;
        break;
      case 'F': {
        char* end = nullptr;
        errno = 0;
        long v = std::strtol(optarg, &end, 10);
        if (errno || end == optarg || *end || v < 0 || v > INT32_MAX)
          return usage_error(fmt::format("invalid file descriptor '{}'", optarg));
        from_fd = static_cast<int>(v);
        break;
      }
      case 'h':
        usage(stdout);
        return 0;
      case kOptVersion:
        std::printf("cr_info (crkit) %s\n", CRKIT_VERSION);
        return 0;
      case ':':
        return usage_error(fmt::format("option '{}' needs an argument", argv[optind - 1]));
      default:
        return usage_error(fmt::format("unknown option '{}'", argv[optind - 1]));
    }
  }

  int nargs = argc - optind;
  if (from_fd && nargs > 0) return usage_error("give either FILE or -F FD, not both");
  if (!from_fd && nargs != 1)
    return usage_error(nargs == 0 ? "no image file given" : "too many arguments");

  UniqueFd owned;
  int fd;
  std::string name;
  if (from_fd) {
    fd = *from_fd;
    name = fmt::format("fd {}", fd);
  } else if (std::strcmp(argv[optind], "-") == 0) {
    fd = STDIN_FILENO;
    name = "<stdin>";
  } else {
    name = argv[optind];
    owned.reset(::open(name.c_str(), O_RDONLY | O_CLOEXEC));
    if (!owned) {
      int err = errno;
      std::fprintf(stderr, "%s: cannot open %s: %s\n", kProg, name.c_str(), std::strerror(err));
      return exit_code_of(err);
    }
    fd = owned.get();
  }

  Result<ImageData> img = load_image(fd, name);
  if (!img) {
    std::fprintf(stderr, "%s: %s\n", kProg, img.error().message.c_str());
    int code = exit_code_of(img.error().code);
    return code ? code : 1;
  }
  if (quiet) return 0;
  if (json_out)
    // Paths and names come from the checkpointed system and need not be UTF-8.
    std::printf("%s\n", to_json(*img).dump(2, ' ', false, json::error_handler_t::replace).c_str());
  else
    print_text(*img);
  if (std::fflush(stdout) != 0) {
    int err = errno;
    std::fprintf(stderr, "%s: writing output: %s\n", kProg, std::strerror(err));
    return exit_code_of(err);
  }
  return 0;
}
