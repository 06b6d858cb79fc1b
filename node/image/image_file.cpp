// Streaming image writer and verifying sequential reader (format in schema.hpp).
#include "image/image_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace crkit::image {

namespace {

constexpr size_t kReadBufferSize = size_t{1} << 20;
// Largest single read(2)/writev(2) request (Linux caps transfers a little below 2 GiB).
constexpr size_t kMaxIo = size_t{1} << 30;
// Writes from this size on go through splice (page batches; small records are not worth it).
constexpr size_t kSpliceMin = size_t{64} << 10;

void store_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void store_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t load_u32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
uint64_t load_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

bool known_record_type(uint32_t t) {
  return std::strcmp(record_type_name(static_cast<RecordType>(t)), "unknown") != 0;
}

std::string record_prefix(const std::string& image_name, uint64_t number, RecordType type,
                          uint64_t offset) {
  return fmt::format("{}: record #{} ({}) at offset {}", image_name, number, record_type_name(type),
                     offset);
}

std::string record_prefix(const RawRecord& r, const std::string& image_name) {
  return record_prefix(image_name, r.number, r.header.type, r.offset);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ImageWriter

bool ImageWriter::splice_ready() {
  if (splice_ == Splice::Unknown) {
    splice_ = Splice::Off;
    struct stat st {};
    int p[2];
    if (::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode) && ::pipe2(p, O_CLOEXEC) == 0) {
      pipe_r_.reset(p[0]);
      pipe_w_.reset(p[1]);
      ::fcntl(p[1], F_SETPIPE_SZ, 1 << 20);  // fewer round trips; the default 64 KiB works too
      splice_ = Splice::On;
    }
  }
  return splice_ == Splice::On;
}

namespace {
// Drops `bytes` from the front of iov[0..n); returns how many entries are used up.
int advance_iov(struct iovec* iov, int n, size_t bytes) {
  int used = 0;
  while (used < n && bytes >= iov[used].iov_len) {
    bytes -= iov[used].iov_len;
    ++used;
  }
  if (used < n) {
    iov[used].iov_base = static_cast<uint8_t*>(iov[used].iov_base) + bytes;
    iov[used].iov_len -= bytes;
  }
  return used;
}
}  // namespace

Result<int> ImageWriter::splice_some(struct iovec* iov, int n) {
  int done = 0;
  while (done < n) {
    // The pipe only refers to the caller's pages; they are copied into the file before this
    // returns (the pipe is always drained), so the caller may reuse its buffers.
    ssize_t v = ::vmsplice(pipe_w_.get(), iov + done, static_cast<unsigned long>(n - done), 0);
    if (v < 0 && errno == EINTR) continue;
    if (v <= 0) {
      splice_ = Splice::Off;  // nothing of this call is in the pipe: writev takes over
      return done;
    }
    size_t left = static_cast<size_t>(v);
    while (left > 0) {
      ssize_t s = ::splice(pipe_r_.get(), nullptr, fd_, nullptr, left, SPLICE_F_MOVE);
      if (s < 0 && errno == EINTR) continue;
      if (s <= 0) {
        const int err = s < 0 ? errno : EIO;
        // What is still in the pipe was not written; it is still in the caller's buffers.
        pipe_r_.reset();
        pipe_w_.reset();
        splice_ = Splice::Off;
        done += advance_iov(iov + done, n - done, static_cast<size_t>(v) - left);
        if (err == EINVAL || err == ENOSYS || err == EOPNOTSUPP) return done;  // no splice here
        return fail_sys(err, "writing image " + name_);
      }
      left -= static_cast<size_t>(s);
      offset_ += static_cast<uint64_t>(s);
    }
    done += advance_iov(iov + done, n - done, static_cast<size_t>(v));
  }
  return done;
}

Status ImageWriter::writev_all(struct iovec* iov, int n) {
  size_t total = 0;
  for (int i = 0; i < n; ++i) total += iov[i].iov_len;
  if (total >= kSpliceMin && splice_ready()) {
    CRKIT_ASSIGN(int used, splice_some(iov, n));
    iov += used;
    n -= used;
  }
  while (n > 0) {
    if (iov[0].iov_len == 0) {
      ++iov;
      --n;
      continue;
    }
    ssize_t w = ::writev(fd_, iov, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return fail_errno("writing image " + name_);
    }
    if (w == 0) return fail_sys(EIO, "writing image " + name_);
    offset_ += static_cast<uint64_t>(w);
    size_t done = static_cast<size_t>(w);
    while (n > 0 && done >= iov[0].iov_len) {
      done -= iov[0].iov_len;
      ++iov;
      --n;
    }
    if (n > 0) {
      iov[0].iov_base = static_cast<uint8_t*>(iov[0].iov_base) + done;
      iov[0].iov_len -= done;
    }
  }
  if (write_behind_ && offset_ - started_ >= write_behind_) write_behind();
  return {};
}

void ImageWriter::write_behind() {
  // Offsets are those of this writer's bytes: right for the image files crkit creates (written
  // from offset 0); for anything else the calls are only hints that cost nothing.
  if (::sync_file_range(fd_, static_cast<off64_t>(started_),
                        static_cast<off64_t>(offset_ - started_), SYNC_FILE_RANGE_WRITE) < 0) {
    write_behind_ = 0;  // ESPIPE (pipe, socket), EINVAL (file system without it): plain writes
    return;
  }
  started_ = offset_;
}

Status ImageWriter::write_all(std::span<const uint8_t> data) {
  struct iovec iov[1];
  iov[0].iov_base = const_cast<uint8_t*>(data.data());
  iov[0].iov_len = data.size();
  return writev_all(iov, 1);
}

Status ImageWriter::write_file_header() {
  uint8_t h[kFileHeaderSize];
  std::memcpy(h, kMagic, sizeof kMagic);
  store_u32(h + 8, kVersion);
  store_u32(h + 12, crc32c({h, 12}));
  return write_all(h);
}

Status ImageWriter::write_record_parts(RecordType type,
                                       std::span<const std::span<const uint8_t>> parts,
                                       std::optional<uint32_t> payload_crc) {
  uint64_t length = 0;
  uint32_t crc = 0;
  for (const auto& p : parts) {
    length += p.size();
    if (!payload_crc) crc = crc32c(p, crc);
  }
  if (payload_crc) crc = *payload_crc;
  if (length > kMaxRecordPayload)
    return fail(EINVAL, fmt::format("writing image {}: {} record of {} bytes exceeds the limit of "
                                    "{} bytes per record",
                                    name_, record_type_name(type), length, kMaxRecordPayload));

  uint8_t h[kRecordHeaderSize];
  store_u32(h, static_cast<uint32_t>(type));
  store_u32(h + 4, 0);  // flags
  store_u64(h + 8, length);
  store_u32(h + 16, crc);
  store_u32(h + 20, crc32c({h, 20}));

  constexpr size_t kMaxParts = 4;
  if (parts.size() > kMaxParts) return fail(EINVAL, "image writer: too many record parts");
  struct iovec iov[1 + kMaxParts];
  iov[0].iov_base = h;
  iov[0].iov_len = sizeof h;
  for (size_t i = 0; i < parts.size(); ++i) {
    iov[1 + i].iov_base = const_cast<uint8_t*>(parts[i].data());
    iov[1 + i].iov_len = parts[i].size();
  }

  uint64_t offset = offset_;
  CRKIT_TRY(writev_all(iov, static_cast<int>(1 + parts.size())));
  if (type != RecordType::Index && type != RecordType::End)
    index_.push_back(IndexEntry{type, offset, length});
  return {};
}

Status ImageWriter::write_record(RecordType type, std::span<const uint8_t> payload) {
  std::span<const uint8_t> parts[1] = {payload};
  return write_record_parts(type, parts);
}

Status ImageWriter::write_pages(const PagesHeader& h, std::span<const uint8_t> data) {
  if (h.compression == kCompressNone && data.size() != h.raw_size)
    return fail(EINVAL, fmt::format("writing image {}: Pages record at 0x{:x}: {} bytes of data "
                                    "but raw_size is {}",
                                    name_, h.vaddr, data.size(), h.raw_size));
  Encoder e;
  encode(e, h);
  std::span<const uint8_t> parts[2] = {e.buffer(), data};
  return write_record_parts(RecordType::Pages, parts);
}

PreparedRecord prepare_page_batch(const PageBatchHeader& h, std::span<const uint8_t> data) {
  PreparedRecord r;
  r.type = RecordType::PageBatch;
  Encoder e;
  encode(e, h);
  r.head = std::move(e.buffer());
  r.body = data;
  r.payload_crc = crc32c(data, crc32c(r.head));
  return r;
}

Status ImageWriter::write_prepared(const PreparedRecord& r) {
  std::span<const uint8_t> parts[2] = {r.head, r.body};
  return write_record_parts(r.type, parts, r.payload_crc);
}

Status ImageWriter::write_file_content(const FileContentHeader& h, std::span<const uint8_t> data) {
  if (h.offset > h.total_size || data.size() > h.total_size - h.offset)
    return fail(EINVAL, fmt::format("writing image {}: FileContent {}: {} bytes at offset {} "
                                    "exceed the total size {}",
                                    name_, h.content_id, data.size(), h.offset, h.total_size));
  Encoder e;
  encode(e, h);
  std::span<const uint8_t> parts[2] = {e.buffer(), data};
  return write_record_parts(RecordType::FileContent, parts);
}

Status ImageWriter::finish() {
  IndexRecord idx;
  idx.entries = index_;
  Encoder ie;
  encode(ie, idx);
  uint64_t index_offset = offset_;
  CRKIT_TRY(write_record(RecordType::Index, ie.buffer()));
  EndRecord end{index_.size(), index_offset};
  Encoder ee;
  encode(ee, end);
  return write_record(RecordType::End, ee.buffer());
}

// ---------------------------------------------------------------------------------------------
// ImageReader

Result<size_t> ImageReader::read_full(void* buf, size_t n) {
  auto* out = static_cast<uint8_t*>(buf);
  size_t got = 0;
  while (got < n) {
    if (buf_pos_ < buf_len_) {
      size_t k = std::min(n - got, buf_len_ - buf_pos_);
      std::memcpy(out + got, buf_.data() + buf_pos_, k);
      buf_pos_ += k;
      got += k;
      continue;
    }
    // Buffer empty: large requests go straight to the destination, small ones refill it.
    size_t want = n - got;
    bool direct = want >= kReadBufferSize;
    if (!direct && buf_.empty()) buf_.resize(kReadBufferSize);
    uint8_t* dst = direct ? out + got : buf_.data();
    size_t len = direct ? std::min(want, kMaxIo) : buf_.size();
    ssize_t r = ::read(fd_, dst, len);
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail_errno("reading image " + name_);
    }
    if (r == 0) break;  // end of file
    if (direct) {
      got += static_cast<size_t>(r);
    } else {
      buf_pos_ = 0;
      buf_len_ = static_cast<size_t>(r);
    }
  }
  return got;
}

Status ImageReader::read_file_header() {
  uint8_t h[kFileHeaderSize];
  CRKIT_ASSIGN(size_t got, read_full(h, sizeof h));
  // An empty file has no magic either, but it is reported as truncated (e.g. a checkpoint that
  // failed before writing anything).
  if (got == 0) return fail(EIO, name_ + ": truncated image: the file is empty (no file header)");
  if (std::memcmp(h, kMagic, std::min(got, sizeof kMagic)) != 0)
    return fail(EINVAL, name_ + ": not a crkit image (bad magic)");
  if (got < sizeof h)
    return fail(EIO, fmt::format("{}: truncated image: the file header needs {} bytes, only {} "
                                 "present",
                                 name_, sizeof h, got));
  uint32_t version = load_u32(h + 8);
  if (version < kMinVersion || version > kVersion)
    return fail(EINVAL, fmt::format("{}: image format version {} is not supported (this crkit "
                                    "reads versions {} to {})",
                                    name_, version, kMinVersion, kVersion));
  if (load_u32(h + 12) != crc32c({h, 12}))
    return fail(EIO, name_ + ": file header checksum mismatch (corrupted image)");
  version_ = version;
  offset_ = sizeof h;
  return {};
}

Status ImageReader::check_trailing() {
  uint8_t b;
  CRKIT_ASSIGN(size_t got, read_full(&b, 1));
  if (got != 0)
    return fail(EIO, fmt::format("{}: unexpected data after the End record at offset {} "
                                 "(trailing garbage)",
                                 name_, offset_));
  return {};
}

Result<std::optional<RawRecord>> ImageReader::next() {
  if (done_) return std::optional<RawRecord>{};
  if (version_ == 0) CRKIT_TRY(read_file_header());

  for (;;) {
    const uint64_t off = offset_;
    const uint64_t num = records_;

    uint8_t h[kRecordHeaderSize];
    CRKIT_ASSIGN(size_t got, read_full(h, sizeof h));
    if (got == 0) {
      if (num == 0)
        return fail(EIO, name_ +
                             ": truncated image: ends after the file header without an End "
                             "record");
      return fail(EIO, fmt::format("{}: truncated image: ends after record #{} without an End "
                                   "record",
                                   name_, num - 1));
    }
    if (got < sizeof h)
      return fail(EIO, fmt::format("{}: truncated image: record #{} at offset {} needs a {}-byte "
                                   "header, only {} bytes present",
                                   name_, num, off, sizeof h, got));

    if (load_u32(h + 20) != crc32c({h, 20}))
      return fail(EIO, fmt::format("{}: record #{} at offset {}: header checksum mismatch "
                                   "(corrupted image)",
                                   name_, num, off));
    RawRecord r;
    uint32_t type = load_u32(h);
    if (!known_record_type(type))
      return fail(EIO, fmt::format("{}: record #{} at offset {}: unknown record type {} "
                                   "(corrupted image or a newer format)",
                                   name_, num, off, type));
    r.header.type = static_cast<RecordType>(type);
    r.header.flags = load_u32(h + 4);
    r.header.length = load_u64(h + 8);
    r.header.payload_crc = load_u32(h + 16);
    r.header.header_crc = load_u32(h + 20);
    r.offset = off;
    r.number = num;
    const std::string where = record_prefix(name_, num, r.header.type, off);

    if (r.header.length > kMaxRecordPayload)
      return fail(EIO, fmt::format("{}: payload length {} exceeds the limit of {} bytes "
                                   "(corrupted image)",
                                   where, r.header.length, kMaxRecordPayload));
    // A recycled buffer keeps its size, so shrinking it to this record costs nothing.
    if (spare_.capacity() >= r.header.length) r.payload = std::move(spare_);
    spare_ = {};
    r.payload.resize(r.header.length);
    CRKIT_ASSIGN(size_t pgot, read_full(r.payload.data(), r.payload.size()));
    if (pgot < r.payload.size())
      return fail(EIO, fmt::format("{}: truncated image: record #{} ({}) at offset {} needs {} "
                                   "bytes, only {} present",
                                   name_, num, record_type_name(r.header.type), off,
                                   r.header.length, pgot));
    if (crc32c(r.payload) != r.header.payload_crc)
      return fail(EIO, where + ": checksum mismatch (corrupted image)");

    offset_ = off + sizeof h + r.header.length;
    ++records_;

    switch (r.header.type) {
      case RecordType::Index: {
        if (index_seen_) return fail(EIO, where + ": a second Index record (corrupted image)");
        CRKIT_ASSIGN(IndexRecord idx, decode_record<IndexRecord>(r, name_));
        if (idx.entries.size() != seen_.size())
          return fail(EIO, fmt::format("{}: the index lists {} records but {} were read "
                                       "(corrupted image)",
                                       where, idx.entries.size(), seen_.size()));
        for (size_t i = 0; i < seen_.size(); ++i) {
          const IndexEntry& a = idx.entries[i];
          const IndexEntry& b = seen_[i];
          if (a.type != b.type || a.offset != b.offset || a.length != b.length)
            return fail(EIO, fmt::format("{}: index entry {} ({} at offset {}, {} bytes) does "
                                         "not match record #{} ({} at offset {}, {} bytes) "
                                         "(corrupted image)",
                                         where, i, record_type_name(a.type), a.offset, a.length, i,
                                         record_type_name(b.type), b.offset, b.length));
        }
        index_seen_ = true;
        index_offset_ = off;
        continue;
      }
      case RecordType::End: {
        if (!index_seen_)
          return fail(EIO, where +
                               ": End record without a preceding Index record (corrupted "
                               "image)");
        CRKIT_ASSIGN(EndRecord end, decode_record<EndRecord>(r, name_));
        if (end.record_count != seen_.size() || end.index_offset != index_offset_)
          return fail(EIO, fmt::format("{}: End record says {} records and the Index at offset "
                                       "{}, but {} records and the Index at offset {} were read "
                                       "(corrupted image)",
                                       where, end.record_count, end.index_offset, seen_.size(),
                                       index_offset_));
        CRKIT_TRY(check_trailing());
        done_ = true;
        return std::optional<RawRecord>{};
      }
      default:
        if (index_seen_)
          return fail(EIO, where + ": data record after the Index record (corrupted image)");
        seen_.push_back(IndexEntry{r.header.type, r.offset, r.header.length});
        return std::optional<RawRecord>{std::move(r)};
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Payload helpers

Result<std::pair<PagesHeader, std::span<const uint8_t>>> decode_pages(
    const RawRecord& r, const std::string& image_name) {
  if (r.header.type != RecordType::Pages)
    return fail(EINVAL, record_prefix(r, image_name) + ": not a Pages record");
  PagesHeader h;
  Decoder d(r.payload);
  Status s = decode(d, h);
  if (!s) return fail(s.error().context(record_prefix(r, image_name)));
  std::span<const uint8_t> data = d.rest();
  if (h.compression == kCompressNone && data.size() != h.raw_size)
    return fail(EIO, fmt::format("{}: {} bytes of page data but raw_size is {} (corrupted image)",
                                 record_prefix(r, image_name), data.size(), h.raw_size));
  return std::pair<PagesHeader, std::span<const uint8_t>>{h, data};
}

Result<std::pair<PageBatchHeader, std::span<const uint8_t>>> decode_page_batch(
    const RawRecord& r, const std::string& image_name) {
  if (r.header.type != RecordType::PageBatch)
    return fail(EINVAL, record_prefix(r, image_name) + ": not a PageBatch record");
  PageBatchHeader h;
  Decoder d(r.payload);
  Status s = decode(d, h);
  if (!s) return fail(s.error().context(record_prefix(r, image_name)));
  std::span<const uint8_t> data = d.rest();
  uint64_t pages = 0;
  for (const auto& x : h.extents) {
    if (x.vaddr % 4096 != 0 || x.npages == 0)
      return fail(EIO, fmt::format("{}: extent {:#x} of {} pages is not a page-aligned, "
                                   "non-empty range (corrupted image)",
                                   record_prefix(r, image_name), x.vaddr, x.npages));
    pages += x.npages;
    // A batch is bounded like any record (this also keeps pages * 4096 from overflowing).
    if (pages > kMaxRecordPayload / 4096)
      return fail(EIO, fmt::format("{}: the extents hold more than {} bytes of pages (corrupted "
                                   "image)",
                                   record_prefix(r, image_name), kMaxRecordPayload));
  }
  if (pages * 4096 != h.raw_size)
    return fail(EIO, fmt::format("{}: the extents hold {} pages but raw_size is {} (corrupted "
                                 "image)",
                                 record_prefix(r, image_name), pages, h.raw_size));
  if (h.compression == 0 && data.size() != h.raw_size)
    return fail(EIO, fmt::format("{}: {} bytes of page data but raw_size is {} (corrupted image)",
                                 record_prefix(r, image_name), data.size(), h.raw_size));
  return std::pair<PageBatchHeader, std::span<const uint8_t>>{std::move(h), data};
}

Result<std::pair<FileContentHeader, std::span<const uint8_t>>> decode_file_content(
    const RawRecord& r, const std::string& image_name) {
  if (r.header.type != RecordType::FileContent)
    return fail(EINVAL, record_prefix(r, image_name) + ": not a FileContent record");
  FileContentHeader h;
  Decoder d(r.payload);
  Status s = decode(d, h);
  if (!s) return fail(s.error().context(record_prefix(r, image_name)));
  std::span<const uint8_t> data = d.rest();
  if (h.offset > h.total_size || data.size() > h.total_size - h.offset)
    return fail(EIO,
                fmt::format("{}: {} bytes at offset {} exceed the file's total size {} "
                            "(corrupted image)",
                            record_prefix(r, image_name), data.size(), h.offset, h.total_size));
  return std::pair<FileContentHeader, std::span<const uint8_t>>{h, data};
}

}  // namespace crkit::image
