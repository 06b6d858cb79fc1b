// Tests of the PageBatch record (image format version 3): header codec, records prepared away
// from the writer (their precomputed checksum must match what the reader verifies), and
// refusal of batches whose extents do not describe their data.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"
#include "image/codec.hpp"
#include "image/image_file.hpp"
#include "image/page_codec.hpp"
#include "image/schema.hpp"
#include "image_test_util.hpp"

namespace crkit::image {
namespace {

using namespace crkit::image::testing;

constexpr uint64_t kPage = 4096;

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}
#define EXPECT_CONTAINS(s, needle) EXPECT_PRED2(contains, s, needle)

void expect_eq(const PageBatchHeader& a, const PageBatchHeader& b) {
  EXPECT_EQ(a.pid, b.pid);
  EXPECT_EQ(a.compression, b.compression);
  EXPECT_EQ(a.raw_size, b.raw_size);
  EXPECT_EQ(a.extents, b.extents);
}

PageBatchHeader sample_batch(int32_t pid = 4242) {
  PageBatchHeader h;
  h.pid = pid;
  h.compression = static_cast<uint32_t>(Compression::None);
  h.extents = {{0x555555554000, 2}, {0x555555559000, 3}, {0x7ffff7ff0000, 1}};
  h.raw_size = 6 * kPage;
  return h;
}

std::string message(const Status& s) {
  return s.ok() ? "" : s.error().message;
}

// ---- header codec ------------------------------------------------------------------------

TEST(PageBatchHeaderCodec, RoundTrip) {
  PageBatchHeader h = sample_batch(-7);  // the sign survives
  h.compression = static_cast<uint32_t>(Compression::Zstd);
  h.extents.push_back({0xfffffffffffff000, 0xffffffff});  // extreme values survive
  Encoder e;
  encode(e, h);
  EXPECT_EQ(e.buffer().size(), 4 + 4 + 8 + 4 + h.extents.size() * 12);
  Decoder d(e.buffer());
  PageBatchHeader got;
  Status s = decode(d, got);
  ASSERT_TRUE(s.ok()) << message(s);
  expect_eq(got, h);
  EXPECT_EQ(d.remaining(), 0u);

  PageBatchHeader empty;
  Encoder e2;
  encode(e2, empty);
  Decoder d2(e2.buffer());
  PageBatchHeader got2 = sample_batch();
  ASSERT_TRUE(decode(d2, got2).ok());
  expect_eq(got2, empty);  // decode replaces, does not append
}

TEST(PageBatchHeaderCodec, TruncatedHeaderIsRefused) {
  Encoder e;
  encode(e, sample_batch());
  const std::vector<uint8_t>& full = e.buffer();
  for (size_t n = 0; n < full.size(); ++n) {
    Decoder d(std::span<const uint8_t>(full.data(), n));
    PageBatchHeader h;
    EXPECT_FALSE(decode(d, h).ok()) << n << " of " << full.size() << " bytes decoded";
  }
  // A count far beyond the payload is refused before allocating for it.
  Encoder big;
  big.i32(1);
  big.u32(0);
  big.u64(0);
  big.u32(0x7fffffff);
  Decoder d(big.buffer());
  PageBatchHeader h;
  EXPECT_FALSE(decode(d, h).ok());
}

// ---- prepared records through the writer and reader --------------------------------------

struct Batch {
  PageBatchHeader header;
  std::vector<uint8_t> raw;     // the pages
  std::vector<uint8_t> stored;  // what the record holds (compressed or raw)
};

Batch make_batch(int32_t pid, uint64_t vaddr, uint32_t npages, const char* codec, uint32_t seed) {
  Batch b;
  b.header.pid = pid;
  b.header.extents = {{vaddr, npages / 2}, {vaddr + (npages / 2 + 5) * kPage, npages - npages / 2}};
  b.header.raw_size = uint64_t{npages} * kPage;
  // Half random, half repetitive: compressible, but not trivially.
  b.raw = pattern(b.header.raw_size, seed);
  for (size_t i = b.raw.size() / 2; i < b.raw.size(); ++i) b.raw[i] = static_cast<uint8_t>(i / 64);
  auto spec = parse_compression(codec);
  EXPECT_TRUE(spec.ok());
  PageCompressor comp(*spec);
  std::vector<uint8_t> z(comp.bound(b.raw.size()));
  auto n = comp.compress(b.raw, z);
  EXPECT_TRUE(n.ok());
  if (n.ok() && *n) {
    z.resize(*n);
    b.stored = std::move(z);
    b.header.compression = static_cast<uint32_t>(spec->kind);
  } else {
    b.stored = b.raw;
  }
  return b;
}

TEST(PageBatchRecord, WritePreparedAndReadBack) {
  std::vector<Batch> batches;
  batches.push_back(make_batch(4242, 0x555555554000, 8, "none", 1));
  batches.push_back(make_batch(4242, 0x7f0000000000, 1024, "lz4", 2));
  batches.push_back(make_batch(4243, 0x7f1000000000, 1024, "zstd:3", 3));
  ASSERT_EQ(batches[0].header.compression, static_cast<uint32_t>(Compression::None));
  ASSERT_EQ(batches[1].header.compression, static_cast<uint32_t>(Compression::Lz4));
  ASSERT_EQ(batches[2].header.compression, static_cast<uint32_t>(Compression::Zstd));

  UniqueFd fd(memfd_create("crkit-page-batch", MFD_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ImageWriter w(fd.get(), "batch.img");
  ASSERT_TRUE(w.write_file_header().ok());
  ASSERT_TRUE(w.write(sample_info()).ok());
  std::vector<uint64_t> offsets;
  for (const auto& b : batches) {
    PreparedRecord rec = prepare_page_batch(b.header, b.stored);
    EXPECT_EQ(rec.type, RecordType::PageBatch);
    // The checksum made in the worker is the one of the whole payload.
    std::vector<uint8_t> payload = rec.head;
    payload.insert(payload.end(), b.stored.begin(), b.stored.end());
    EXPECT_EQ(rec.payload_crc, crc32c(payload));
    offsets.push_back(w.bytes_written());
    Status s = w.write_prepared(rec);
    ASSERT_TRUE(s.ok()) << message(s);
  }
  Status s = w.finish();
  ASSERT_TRUE(s.ok()) << message(s);

  ASSERT_EQ(::lseek(fd.get(), 0, SEEK_SET), 0);
  auto recs = read_all(fd.get(), "batch.img");
  ASSERT_TRUE(recs.ok()) << recs.error().message;
  ASSERT_EQ(recs->size(), 1 + batches.size());
  PageDecompressor dec;
  for (size_t i = 0; i < batches.size(); ++i) {
    SCOPED_TRACE(i);
    const RawRecord& r = (*recs)[i + 1];
    EXPECT_EQ(r.header.type, RecordType::PageBatch);
    EXPECT_EQ(r.offset, offsets[i]);
    auto got = decode_page_batch(r, "batch.img");
    ASSERT_TRUE(got.ok()) << got.error().message;
    expect_eq(got->first, batches[i].header);
    ASSERT_EQ(got->second.size(), batches[i].stored.size());
    EXPECT_TRUE(std::equal(got->second.begin(), got->second.end(), batches[i].stored.begin()));
    std::vector<uint8_t> pages(got->first.raw_size);
    Status ds =
        dec.decompress(static_cast<Compression>(got->first.compression), got->second, pages);
    ASSERT_TRUE(ds.ok()) << message(ds);
    EXPECT_TRUE(pages == batches[i].raw);
  }
}

// A prepared record is byte for byte the record write_record() makes of the same payload.
TEST(PageBatchRecord, PreparedEqualsPlainRecord) {
  const Batch b = make_batch(7, 0x400000, 16, "lz4", 4);
  PreparedRecord rec = prepare_page_batch(b.header, b.stored);
  std::vector<uint8_t> payload = rec.head;
  payload.insert(payload.end(), b.stored.begin(), b.stored.end());

  UniqueFd fa(memfd_create("a", MFD_CLOEXEC)), fb(memfd_create("b", MFD_CLOEXEC));
  ImageWriter wa(fa.get(), "a"), wb(fb.get(), "b");
  ASSERT_TRUE(wa.write_file_header().ok() && wa.write_prepared(rec).ok() && wa.finish().ok());
  ASSERT_TRUE(wb.write_file_header().ok() && wb.write_record(RecordType::PageBatch, payload).ok() &&
              wb.finish().ok());
  EXPECT_TRUE(read_fd_all(fa.get()) == read_fd_all(fb.get()));
}

// ---- damaged batches ---------------------------------------------------------------------

// Writes one PageBatch record (after ImageInfo, so it is record #1) and returns its decoding.
Result<std::pair<PageBatchHeader, std::span<const uint8_t>>> roundtrip(
    const PageBatchHeader& h, const std::vector<uint8_t>& data, std::vector<RawRecord>& keep) {
  UniqueFd fd(memfd_create("crkit-bad-batch", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  ImageWriter w(fd.get(), "bad.img");
  CRKIT_TRY(w.write_file_header());
  CRKIT_TRY(w.write(sample_info()));
  CRKIT_TRY(w.write_prepared(prepare_page_batch(h, data)));
  CRKIT_TRY(w.finish());
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_SET), 0);
  CRKIT_ASSIGN(keep, read_all(fd.get(), "bad.img"));
  if (keep.size() != 2) return fail(EINVAL, "unexpected record count");
  return decode_page_batch(keep[1], "bad.img");
}

void expect_refused(const PageBatchHeader& h, const std::vector<uint8_t>& data,
                    const std::string& why) {
  std::vector<RawRecord> keep;
  auto r = roundtrip(h, data, keep);
  ASSERT_FALSE(r.ok()) << "accepted";
  EXPECT_EQ(r.error().code, EIO) << r.error().message;
  ASSERT_EQ(keep.size(), 2u) << r.error().message;
  const std::string prefix =
      fmt::format("bad.img: record #1 (PageBatch) at offset {}: ", keep[1].offset);
  EXPECT_EQ(r.error().message.rfind(prefix, 0), 0u) << r.error().message;
  EXPECT_CONTAINS(r.error().message, why);
  EXPECT_CONTAINS(r.error().message, "corrupted image");
}

TEST(PageBatchRecord, GoodBatchIsAccepted) {
  std::vector<RawRecord> keep;
  const PageBatchHeader h = sample_batch();
  auto r = roundtrip(h, pattern(h.raw_size, 5), keep);
  ASSERT_TRUE(r.ok()) << r.error().message;
  expect_eq(r->first, h);
}

TEST(PageBatchRecord, UnalignedExtentIsRefused) {
  PageBatchHeader h = sample_batch();
  h.extents[1].vaddr += 8;
  expect_refused(h, pattern(h.raw_size, 5), "page-aligned");
}

TEST(PageBatchRecord, EmptyExtentIsRefused) {
  PageBatchHeader h = sample_batch();
  h.extents[2].npages = 0;
  h.raw_size -= kPage;
  expect_refused(h, pattern(h.raw_size, 5), "non-empty");
}

TEST(PageBatchRecord, RawSizeMismatchIsRefused) {
  PageBatchHeader h = sample_batch();
  h.raw_size += kPage;
  expect_refused(h, pattern(h.raw_size, 5), "raw_size");
  h = sample_batch();
  h.raw_size -= 1;
  expect_refused(h, pattern(h.raw_size, 5), "raw_size");
}

TEST(PageBatchRecord, RawDataSizeMismatchIsRefused) {
  const PageBatchHeader h = sample_batch();
  expect_refused(h, pattern(h.raw_size - kPage, 5), "bytes of page data");
  expect_refused(h, pattern(h.raw_size + 1, 5), "bytes of page data");
  expect_refused(h, {}, "bytes of page data");
}

// Extents whose page count overflows 64 bits when multiplied by the page size must not pass as
// matching raw_size: 2^21 extents of 2^31 pages are 2^64 bytes, which wraps to raw_size 0, and a
// restore would then write 8 PiB per extent from an empty buffer.
// DISABLED: decode_page_batch computes pages * 4096 unchecked and accepts this record (found
// while writing these tests); enable once it is fixed.
TEST(PageBatchRecord, ExtentSizeOverflowIsRefused) {
  PageBatchHeader h;
  h.pid = 1;
  h.raw_size = 0;
  for (uint64_t i = 0; i < (1u << 21); ++i) h.extents.push_back({i << 12, 1u << 31});
  Encoder e;
  encode(e, h);
  RawRecord r;
  r.header.type = RecordType::PageBatch;
  r.number = 1;
  r.offset = 100;
  r.payload = std::move(e.buffer());
  auto got = decode_page_batch(r, "x.img");
  ASSERT_FALSE(got.ok()) << "extents of 2^64 bytes accepted with raw_size 0";
  EXPECT_EQ(got.error().code, EIO);
  EXPECT_CONTAINS(got.error().message, "x.img: record #1 (PageBatch) at offset 100: ");
}

TEST(PageBatchRecord, TruncatedHeaderIsRefusedNamingTheRecord) {
  RawRecord r;
  r.header.type = RecordType::PageBatch;
  r.number = 3;
  r.offset = 1000;
  r.payload = {1, 2, 3};
  auto got = decode_page_batch(r, "x.img");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().message.rfind("x.img: record #3 (PageBatch) at offset 1000: ", 0), 0u)
      << got.error().message;
}

TEST(PageBatchRecord, WrongRecordTypeIsRefused) {
  RawRecord r;
  r.header.type = RecordType::Pages;
  r.number = 2;
  r.offset = 500;
  Encoder e;
  encode(e, sample_batch());
  r.payload = e.buffer();
  auto got = decode_page_batch(r, "x.img");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code, EINVAL);
  EXPECT_CONTAINS(got.error().message, "not a PageBatch record");
}

// Damage anywhere in a PageBatch payload (its header fields or its compressed data) is a
// checksum mismatch of that record: the precomputed CRC covers both pieces.
TEST(PageBatchRecord, ChecksumErrorIsDetected) {
  const Batch b = make_batch(4242, 0x7f0000000000, 64, "zstd", 6);
  ASSERT_NE(b.header.compression, 0u);
  UniqueFd fd(memfd_create("crkit-crc", MFD_CLOEXEC));
  ImageWriter w(fd.get(), "crc.img");
  ASSERT_TRUE(w.write_file_header().ok());
  const uint64_t off = w.bytes_written();
  const PreparedRecord rec = prepare_page_batch(b.header, b.stored);
  ASSERT_TRUE(w.write_prepared(rec).ok());
  ASSERT_TRUE(w.finish().ok());
  const std::vector<uint8_t> good = read_fd_all(fd.get());
  ASSERT_TRUE(read_bytes(good, "crc.img").ok());

  const size_t payload = rec.head.size() + b.stored.size();
  const std::string want =
      fmt::format("crc.img: record #0 (PageBatch) at offset {}: checksum mismatch", off);
  size_t checked = 0;
  for (size_t i = 0; i < payload; i += (i < rec.head.size() ? 1 : 101)) {
    std::vector<uint8_t> bad = good;
    bad[off + kRecordHeaderSize + i] ^= 0x10;
    auto r = read_bytes(bad, "crc.img");
    ASSERT_FALSE(r.ok()) << "byte " << i << " of the payload";
    EXPECT_EQ(r.error().code, EIO);
    ASSERT_EQ(r.error().message.rfind(want, 0), 0u) << r.error().message;
    ++checked;
  }
  EXPECT_GT(checked, rec.head.size());
}

}  // namespace
}  // namespace crkit::image
