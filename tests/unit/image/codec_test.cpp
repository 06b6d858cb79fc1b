// Tests of the image codec: CRC32C, primitive encoding, and every schema struct.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cerrno>
#include <climits>
#include <string>
#include <vector>

#include "image/codec.hpp"
#include "image/image_file.hpp"
#include "image_test_util.hpp"

namespace crkit::image {
namespace {

using namespace crkit::image::testing;

std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// ---- CRC32C ---------------------------------------------------------------------------------

TEST(Crc32c, StandardCheckValue) {
  EXPECT_EQ(crc32c(as_bytes("123456789")), 0xE3069283u);
}

TEST(Crc32c, Empty) {
  EXPECT_EQ(crc32c({}), 0u);
}

// RFC 3720 (iSCSI) appendix B.4 test vectors.
TEST(Crc32c, Rfc3720Vectors) {
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xff), inc(32), dec(32);
  for (int i = 0; i < 32; ++i) {
    inc[i] = static_cast<uint8_t>(i);
    dec[i] = static_cast<uint8_t>(31 - i);
  }
  EXPECT_EQ(crc32c(zeros), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones), 0x62A8AB43u);
  EXPECT_EQ(crc32c(inc), 0x46DD794Eu);
  EXPECT_EQ(crc32c(dec), 0x113FDB5Cu);
}

TEST(Crc32c, SeedContinuesACrc) {
  std::string s = "The quick brown fox jumps over the lazy dog";
  auto all = as_bytes(s);
  for (size_t cut = 0; cut <= s.size(); ++cut)
    EXPECT_EQ(crc32c(all.subspan(cut), crc32c(all.first(cut))), crc32c(all)) << cut;
}

// Spans longer than INT_MAX are processed in chunks (isa-l takes an int length). The pages of
// a private anonymous mapping read as zeros without using memory.
TEST(Crc32c, SpanLargerThanIntMax) {
  const size_t n = size_t{INT_MAX} + 1 + 4096 * 3;
  void* p = mmap(nullptr, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  std::span<const uint8_t> big(static_cast<const uint8_t*>(p), n);
  uint32_t chunked = 0;
  const size_t step = size_t{64} << 20;
  for (size_t off = 0; off < n; off += step)
    chunked = crc32c(big.subspan(off, std::min(step, n - off)), chunked);
  EXPECT_EQ(crc32c(big), chunked);
  EXPECT_NE(crc32c(big), crc32c(big.first(INT_MAX)));
  munmap(p, n);
}

// ---- primitives -----------------------------------------------------------------------------

TEST(Codec, LittleEndianLayout) {
  Encoder e;
  e.u8(0xab);
  e.u32(0x01020304);
  e.u64(0x1122334455667788ull);
  e.i32(-2);
  e.str("hi");
  std::vector<uint8_t> blob = {9, 8, 7};
  e.bytes(blob);
  e.raw(blob);
  std::vector<uint8_t> want = {0xab, 4,    3,    2,    1,    0x88, 0x77, 0x66, 0x55, 0x44, 0x33,
                               0x22, 0x11, 0xfe, 0xff, 0xff, 0xff, 2,    0,    0,    0,    'h',
                               'i',  3,    0,    0,    0,    9,    8,    7,    9,    8,    7};
  EXPECT_EQ(e.buffer(), want);

  Decoder d(e.buffer());
  EXPECT_EQ(*d.u8("a"), 0xab);
  EXPECT_EQ(*d.u32("b"), 0x01020304u);
  EXPECT_EQ(*d.u64("c"), 0x1122334455667788ull);
  EXPECT_EQ(*d.i32("d"), -2);
  EXPECT_EQ(*d.str("e"), "hi");
  EXPECT_EQ(*d.bytes("f"), blob);
  auto r = d.raw(3, "g");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::vector<uint8_t>(r->begin(), r->end()), blob);
  EXPECT_EQ(d.remaining(), 0u);
  EXPECT_EQ(d.position(), want.size());
}

TEST(Codec, NegativeI64) {
  Encoder e;
  e.i64(-1234567890123ll);
  Decoder d(e.buffer());
  EXPECT_EQ(*d.i64("x"), -1234567890123ll);
}

TEST(Codec, DecoderErrorNamesTheField) {
  std::vector<uint8_t> three = {1, 2, 3};
  Decoder d(three);
  auto r = d.u32("page_size");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_EQ(r.error().message, "field 'page_size': needs 4 bytes, 3 left");
  // A failed read consumes nothing.
  EXPECT_EQ(d.remaining(), 3u);
  EXPECT_EQ(*d.u8("x"), 1);
  auto r64 = d.u64("xfeatures");
  ASSERT_FALSE(r64.ok());
  EXPECT_EQ(r64.error().message, "field 'xfeatures': needs 8 bytes, 2 left");
}

TEST(Codec, StringLengthBeyondPayload) {
  Encoder e;
  e.u32(100);
  e.raw(std::vector<uint8_t>(10, 'a'));
  Decoder d(e.buffer());
  auto r = d.str("hostname");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_EQ(r.error().message, "field 'hostname': needs 100 bytes, 10 left");
}

TEST(Codec, TruncatedXstateNamesField) {
  ThreadRecord t = sample_thread();
  Encoder e;
  encode(e, t);
  // pid, tid, gpregs (4 + 216), xstate length (4), then 12 bytes of xstate.
  size_t cut = 4 + 4 + 4 + 216 + 4 + 12;
  std::vector<uint8_t> part(e.buffer().begin(), e.buffer().begin() + cut);
  Decoder d(part);
  ThreadRecord out;
  Status s = decode(d, out);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, EIO);
  EXPECT_EQ(s.error().message, "field 'xstate': needs 832 bytes, 12 left");
}

TEST(Codec, HugeVectorCountIsRejectedWithoutAllocating) {
  Encoder e;
  e.u32(0xffffffff);  // entries
  Decoder d(e.buffer());
  IndexRecord idx;
  Status s = decode(d, idx);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, EIO);
  EXPECT_NE(s.error().message.find("field 'entries'"), std::string::npos) << s.error().message;
}

TEST(Codec, UnknownEnumValueIsRejected) {
  VmaRecord v = sample_vma();
  v.kind = static_cast<VmaKind>(99);
  Encoder e;
  encode(e, v);
  Decoder d(e.buffer());
  VmaRecord out;
  Status s = decode(d, out);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, EIO);
  EXPECT_NE(s.error().message.find("field 'kind'"), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("99"), std::string::npos) << s.error().message;
}

// ---- roundtrip of every struct --------------------------------------------------------------

template <class T>
T roundtrip(const T& v, size_t* encoded_size = nullptr) {
  Encoder e;
  encode(e, v);
  if (encoded_size) *encoded_size = e.buffer().size();
  Decoder d(e.buffer());
  T out;
  Status s = decode(d, out);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  EXPECT_EQ(d.remaining(), 0u) << "decode left bytes unread";
  // Re-encoding gives the same bytes.
  Encoder e2;
  encode(e2, out);
  EXPECT_EQ(e.buffer(), e2.buffer());
  return out;
}

// Every prefix of an encoding fails to decode with an EIO that names a field, except one of
// exactly version1_size bytes (a record as format version 1 wrote it, without the fields
// added in version 2).
template <class T>
void expect_prefixes_fail(const T& v, size_t version1_size = 0) {
  Encoder e;
  encode(e, v);
  const auto& full = e.buffer();
  for (size_t n = 0; n < full.size(); ++n) {
    if (version1_size && n == version1_size) continue;
    std::vector<uint8_t> part(full.begin(), full.begin() + n);
    Decoder d(part);
    T out;
    Status s = decode(d, out);
    ASSERT_FALSE(s.ok()) << "prefix " << n << " of " << full.size() << " decoded";
    EXPECT_EQ(s.error().code, EIO);
    EXPECT_EQ(s.error().message.rfind("field '", 0), 0u) << s.error().message;
  }
}

TEST(CodecRoundtrip, ImageInfo) {
  ImageInfo v = sample_info();
  size_t n = 0;
  expect_eq(roundtrip(v, &n), v);
  EXPECT_EQ(n, 4 + 4 + 8 + 8 + (4 + v.hostname.size()) + (4 + v.kernel_release.size()) +
                   (4 + v.crkit_version.size()) + 4 + 4 + 4);
  expect_prefixes_fail(v);
}

TEST(CodecRoundtrip, ProcessRecord) {
  ProcessRecord v = sample_process();
  size_t n = 0;
  expect_eq(roundtrip(v, &n), v);
  expect_prefixes_fail(v, n - 8);
}

// A version-1 Process record ends before exit_signal: it decodes, with the defaults.
TEST(CodecRoundtrip, ProcessRecordVersion1) {
  ProcessRecord v = sample_process();
  Encoder e;
  encode(e, v);
  std::vector<uint8_t> v1(e.buffer().begin(), e.buffer().end() - 8);
  Decoder d(v1);
  ProcessRecord out;
  ASSERT_TRUE(decode(d, out).ok());
  EXPECT_EQ(out.no_new_privs, v.no_new_privs);
  EXPECT_EQ(out.exit_signal, 17u);
  EXPECT_EQ(out.pdeath_signal, 0u);
}

TEST(CodecRoundtrip, ProcessRecordEmptyVectors) {
  ProcessRecord v;
  v.comm = "x";
  expect_eq(roundtrip(v), v);
}

TEST(CodecRoundtrip, ThreadRecord) {
  ThreadRecord v = sample_thread(10, 11);
  expect_eq(roundtrip(v), v);
  expect_prefixes_fail(v);
}

TEST(CodecRoundtrip, VmaRecord) {
  VmaRecord v = sample_vma();
  size_t n = 0;
  expect_eq(roundtrip(v, &n), v);
  EXPECT_EQ(n, 4 + 8 + 8 + 4 + 4 + 4 + 4 + 8 + (4 + v.name.size()) + 44 + 8);
  expect_prefixes_fail(v);
}

TEST(CodecRoundtrip, EveryVmaKind) {
  for (uint32_t k = 1; k <= 8; ++k) {
    VmaRecord v = sample_vma();
    v.kind = static_cast<VmaKind>(k);
    EXPECT_STRNE(vma_kind_name(v.kind), "unknown");
    EXPECT_EQ(roundtrip(v).kind, v.kind);
  }
  EXPECT_STREQ(vma_kind_name(static_cast<VmaKind>(0)), "unknown");
}

TEST(CodecRoundtrip, FdRecord) {
  FdRecord v = sample_fd();
  size_t n = 0;
  expect_eq(roundtrip(v, &n), v);
  expect_prefixes_fail(v, n - 4);
}

TEST(CodecRoundtrip, FdRecordVersion1) {
  FdRecord v = sample_fd();
  Encoder e;
  encode(e, v);
  std::vector<uint8_t> v1(e.buffer().begin(), e.buffer().end() - 4);
  Decoder d(v1);
  FdRecord out;
  ASSERT_TRUE(decode(d, out).ok());
  EXPECT_EQ(out.file_id, v.file_id);
  EXPECT_EQ(out.attrs, 0u);
}

TEST(CodecRoundtrip, EveryFdKind) {
  for (uint32_t k = 1; k <= 9; ++k) {
    FdRecord v = sample_fd();
    v.kind = static_cast<FdKind>(k);
    EXPECT_STRNE(fd_kind_name(v.kind), "unknown");
    EXPECT_EQ(roundtrip(v).kind, v.kind);
  }
  EXPECT_STREQ(fd_kind_name(static_cast<FdKind>(10)), "unknown");
}

TEST(CodecRoundtrip, FileContentHeader) {
  FileContentHeader v{9, 0x123456789, 0x223456789};
  size_t n = 0;
  expect_eq(roundtrip(v, &n), v);
  EXPECT_EQ(n, 20u);
  expect_prefixes_fail(v);
}

TEST(CodecRoundtrip, PagesHeader) {
  PagesHeader v{77, 0x7fff12345000, 513, 3, 513 * 4096};
  size_t n = 0;
  expect_eq(roundtrip(v, &n), v);
  EXPECT_EQ(n, 28u);
  expect_prefixes_fail(v);
}

TEST(CodecRoundtrip, IndexRecord) {
  IndexRecord v;
  v.entries = {{RecordType::ImageInfo, 16, 100},
               {RecordType::Pages, 140, 1ull << 29},
               {RecordType::FileContent, 0x100000000ull, 7}};
  size_t n = 0;
  IndexRecord out = roundtrip(v, &n);
  EXPECT_EQ(n, 4 + 3 * 20u);
  ASSERT_EQ(out.entries.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(out.entries[i].type, v.entries[i].type);
    EXPECT_EQ(out.entries[i].offset, v.entries[i].offset);
    EXPECT_EQ(out.entries[i].length, v.entries[i].length);
  }
  expect_prefixes_fail(v);
}

TEST(CodecRoundtrip, EndRecord) {
  EndRecord v{12, 0xabcdef};
  size_t n = 0;
  EndRecord out = roundtrip(v, &n);
  EXPECT_EQ(n, 16u);
  EXPECT_EQ(out.record_count, 12u);
  EXPECT_EQ(out.index_offset, 0xabcdefu);
  expect_prefixes_fail(v);
}

TEST(CodecNames, RecordTypes) {
  EXPECT_STREQ(record_type_name(RecordType::ImageInfo), "ImageInfo");
  EXPECT_STREQ(record_type_name(RecordType::Process), "Process");
  EXPECT_STREQ(record_type_name(RecordType::Thread), "Thread");
  EXPECT_STREQ(record_type_name(RecordType::Vma), "Vma");
  EXPECT_STREQ(record_type_name(RecordType::Fd), "Fd");
  EXPECT_STREQ(record_type_name(RecordType::FileContent), "FileContent");
  EXPECT_STREQ(record_type_name(RecordType::Pages), "Pages");
  EXPECT_STREQ(record_type_name(RecordType::Index), "Index");
  EXPECT_STREQ(record_type_name(RecordType::End), "End");
  EXPECT_STREQ(record_type_name(static_cast<RecordType>(42)), "unknown");
}

TEST(CodecRecordType, Mapping) {
  EXPECT_EQ(record_type_of(ImageInfo{}), RecordType::ImageInfo);
  EXPECT_EQ(record_type_of(ProcessRecord{}), RecordType::Process);
  EXPECT_EQ(record_type_of(ThreadRecord{}), RecordType::Thread);
  EXPECT_EQ(record_type_of(VmaRecord{}), RecordType::Vma);
  EXPECT_EQ(record_type_of(FdRecord{}), RecordType::Fd);
}

TEST(DecodeRecord, ErrorNamesRecord) {
  RawRecord r;
  r.header.type = RecordType::Thread;
  r.offset = 1234;
  r.number = 5;
  r.payload = {1, 0, 0, 0};
  auto t = decode_record<ThreadRecord>(r, "ctx.img");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code, EIO);
  EXPECT_EQ(t.error().message,
            "ctx.img: record #5 (Thread) at offset 1234: field 'tid': needs 4 bytes, 0 left");
}

}  // namespace
}  // namespace crkit::image
