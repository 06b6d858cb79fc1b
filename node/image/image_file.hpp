// Streaming writer and verifying reader of crkit image files (format in schema.hpp).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "image/codec.hpp"
#include "image/schema.hpp"

namespace crkit::image {

// A record made ready away from the writer (in a worker thread): its payload in two pieces and
// their checksum, so that the writer only has to write it.
struct PreparedRecord {
  RecordType type{};
  std::vector<uint8_t> head;      // encoded header fields
  std::span<const uint8_t> body;  // data, owned by the caller until written
  uint32_t payload_crc = 0;
};
// A PageBatch record of header h and data (compressed, or raw when h.compression is None).
PreparedRecord prepare_page_batch(const PageBatchHeader& h, std::span<const uint8_t> data);

// Writes an image front to back to a file descriptor it does not own (file, pipe, socket).
// Errors name the destination and carry the errno (ENOSPC, EPIPE, ...).
class ImageWriter {
 public:
  ImageWriter(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}

  Status write_file_header();
  Status write_record(RecordType type, std::span<const uint8_t> payload);
  template <class T>
  Status write(const T& rec) {
    Encoder e;
    encode(e, rec);
    return write_record(record_type_of(rec), e.buffer());
  }
  // One Pages record: header + data (data.size() == npages * page_size).
  Status write_pages(const PagesHeader& h, std::span<const uint8_t> data);
  // A record prepared by prepare_page_batch() (its checksum is not computed again).
  Status write_prepared(const PreparedRecord& r);
  // One FileContent record.
  Status write_file_content(const FileContentHeader& h, std::span<const uint8_t> data);
  // Writes Index and End; after this the image is complete.
  Status finish();

  uint64_t bytes_written() const { return offset_; }

  // Write-behind for an image that will be fsync()ed: every `window` bytes, writeback of the
  // new window is started at once (not waited for), so the disk works while pages are still
  // being captured and the final fsync() finds little left to do. Waiting for the window
  // before, to bound dirty memory ourselves, was slower on a 4 GiB dump (6.6-6.9 s against
  // 6.3 s); the kernel's dirty limits bound it anyway. 0 (the default) turns it off; a file
  // that does not support it (a pipe, a socket) turns it off by itself.
  void set_write_behind(uint64_t window) { write_behind_ = window; }

 private:
  void write_behind();
  Status write_all(std::span<const uint8_t> data);
  // Large writes to a regular file go through a pipe: vmsplice() then splice(). The kernel
  // then copies into the page cache with its own memcpy instead of a copy from user memory,
  // which measured 3x faster on the development VM (2.1 against 0.7 GB/s, bench/README.md).
  bool splice_ready();
  // Like writev_all for what it can; returns the number of iov entries it fully wrote, and
  // leaves the rest (from an iov it advanced) to writev_all when splice turns out unusable.
  Result<int> splice_some(struct iovec* iov, int n);
  // Writes all of iov[0..n) (retrying on EINTR and short writes); iov is modified.
  Status writev_all(struct iovec* iov, int n);
  // Writes one record whose payload is the concatenation of parts.
  Status write_record_parts(RecordType type, std::span<const std::span<const uint8_t>> parts,
                            std::optional<uint32_t> payload_crc = std::nullopt);
  int fd_;
  std::string name_;
  uint64_t offset_ = 0;
  uint64_t write_behind_ = 0;
  enum class Splice { Unknown, On, Off } splice_ = Splice::Unknown;
  UniqueFd pipe_r_, pipe_w_;
  uint64_t started_ = 0;  // writeback started for [0, started_)
  std::vector<IndexEntry> index_;
};

struct RawRecord {
  RecordHeader header;
  uint64_t offset = 0;  // file offset of the record header
  uint64_t number = 0;  // 0-based record number
  std::vector<uint8_t> payload;
};

// Reads and verifies an image sequentially from a file descriptor it does not own.
// Every error says which record (number, type, offset) and why: bad magic, wrong version,
// checksum mismatch, truncation, unknown record type, missing End.
// Only read(2) is used (never lseek), so the fd may be a pipe or socket; input is buffered,
// so the reader may consume bytes of the fd beyond the record it returns. The Index and End
// records are verified by the reader itself and not returned: next() returns the data records
// (ImageInfo ... Pages) and then std::nullopt. After End the reader requires end of file
// (it waits for the writer of a pipe to close it); trailing data is an error.
class ImageReader {
 public:
  ImageReader(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}

  Status read_file_header();
  uint32_t version() const { return version_; }
  // The next record, or std::nullopt after the End record has been read and verified.
  // Returns an error if the stream ends before End (truncated image).
  // Calls read_file_header() first if that has not been done.
  Result<std::optional<RawRecord>> next();
  // Hands back the payload of a record that is no longer needed: the next record's payload
  // reuses its memory (a large record then costs no fresh allocation, page faults or zeroing).
  void recycle(std::vector<uint8_t>&& payload) { spare_ = std::move(payload); }

  const std::string& name() const { return name_; }
  // Bytes consumed so far (offset of the next record header).
  uint64_t offset() const { return offset_; }

 private:
  // Reads up to n bytes, fewer only at end of file; returns the count read.
  Result<size_t> read_full(void* buf, size_t n);
  Status check_trailing();
  int fd_;
  std::string name_;
  uint64_t offset_ = 0;
  uint64_t records_ = 0;
  uint32_t version_ = 0;
  bool done_ = false;
  bool index_seen_ = false;
  uint64_t index_offset_ = 0;
  std::vector<IndexEntry> seen_;
  std::vector<uint8_t> spare_;  // see recycle()
  std::vector<uint8_t> buf_;    // read buffer; buf_[buf_pos_, buf_len_) not yet consumed
  size_t buf_pos_ = 0;
  size_t buf_len_ = 0;
};

// Decodes a record's payload into a struct, prefixing errors with the record's identity.
template <class T>
Result<T> decode_record(const RawRecord& r, const std::string& image_name) {
  T v;
  Decoder d(r.payload);
  Status s = decode(d, v);
  if (!s)
    return fail(s.error().code, image_name + ": record #" + std::to_string(r.number) + " (" +
                                    record_type_name(r.header.type) + ") at offset " +
                                    std::to_string(r.offset) + ": " + s.error().message);
  return v;
}

// Splits a Pages record payload into header and page data.
Result<std::pair<PagesHeader, std::span<const uint8_t>>> decode_pages(
    const RawRecord& r, const std::string& image_name);
// Splits a PageBatch record payload into header and (possibly compressed) data, checking that
// the extents are page-aligned and add up to raw_size.
Result<std::pair<PageBatchHeader, std::span<const uint8_t>>> decode_page_batch(
    const RawRecord& r, const std::string& image_name);
Result<std::pair<FileContentHeader, std::span<const uint8_t>>> decode_file_content(
    const RawRecord& r, const std::string& image_name);

}  // namespace crkit::image
