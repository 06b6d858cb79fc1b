// Binary encoding of the schema records (little-endian, length-prefixed strings/vectors).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "image/schema.hpp"

namespace crkit::image {

uint32_t crc32c(std::span<const uint8_t> data, uint32_t seed = 0);

class Encoder {
 public:
  void u8(uint8_t v);
  void u32(uint32_t v);
  void u64(uint64_t v);
  void i32(int32_t v) { u32(static_cast<uint32_t>(v)); }
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void str(const std::string& s);
  void bytes(std::span<const uint8_t> b);  // u32 length + data
  void raw(std::span<const uint8_t> b);    // data only
  std::vector<uint8_t>& buffer() { return buf_; }
  const std::vector<uint8_t>& buffer() const { return buf_; }

 private:
  std::vector<uint8_t> buf_;
};

// Decoder over one record's payload; every read is bounds-checked and a failure names the
// field that could not be read.
class Decoder {
 public:
  explicit Decoder(std::span<const uint8_t> data) : data_(data) {}
  Result<uint8_t> u8(const char* field);
  Result<uint32_t> u32(const char* field);
  Result<uint64_t> u64(const char* field);
  Result<int32_t> i32(const char* field);
  Result<int64_t> i64(const char* field);
  Result<std::string> str(const char* field);
  Result<std::vector<uint8_t>> bytes(const char* field);
  Result<std::span<const uint8_t>> raw(size_t n, const char* field);
  std::span<const uint8_t> rest() const { return data_.subspan(pos_); }
  size_t remaining() const { return data_.size() - pos_; }
  size_t position() const { return pos_; }

 private:
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
};

// encode()/decode() for every record struct in schema.hpp.
void encode(Encoder& e, const ImageInfo& v);
void encode(Encoder& e, const ProcessRecord& v);
void encode(Encoder& e, const ThreadRecord& v);
void encode(Encoder& e, const VmaRecord& v);
void encode(Encoder& e, const FdRecord& v);
void encode(Encoder& e, const FileContentHeader& v);
void encode(Encoder& e, const PagesHeader& v);
void encode(Encoder& e, const PageBatchHeader& v);
void encode(Encoder& e, const IndexRecord& v);
void encode(Encoder& e, const EndRecord& v);

Status decode(Decoder& d, ImageInfo& v);
Status decode(Decoder& d, ProcessRecord& v);
Status decode(Decoder& d, ThreadRecord& v);
Status decode(Decoder& d, VmaRecord& v);
Status decode(Decoder& d, FdRecord& v);
Status decode(Decoder& d, FileContentHeader& v);
Status decode(Decoder& d, PagesHeader& v);
Status decode(Decoder& d, PageBatchHeader& v);
Status decode(Decoder& d, IndexRecord& v);
Status decode(Decoder& d, EndRecord& v);

// The RecordType a struct is stored as.
inline RecordType record_type_of(const ImageInfo&) {
  return RecordType::ImageInfo;
}
inline RecordType record_type_of(const ProcessRecord&) {
  return RecordType::Process;
}
inline RecordType record_type_of(const ThreadRecord&) {
  return RecordType::Thread;
}
inline RecordType record_type_of(const VmaRecord&) {
  return RecordType::Vma;
}
inline RecordType record_type_of(const FdRecord&) {
  return RecordType::Fd;
}

}  // namespace crkit::image
