// Tests of ImageWriter / ImageReader: roundtrips over a pipe and a file, page data integrity,
// and detection of every kind of damage (corruption, truncation, bad magic/version, missing End,
// trailing data).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <thread>
#include <vector>

#include "image/codec.hpp"
#include "image/image_file.hpp"
#include "image_test_util.hpp"

namespace crkit::image {
namespace {

using namespace crkit::image::testing;

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

#define EXPECT_CONTAINS(s, needle) EXPECT_PRED2(contains, s, needle)

void put_u32(std::vector<uint8_t>& b, size_t off, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}
void put_u64(std::vector<uint8_t>& b, size_t off, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}
// Recomputes the header CRC of the record header at off.
void fix_header_crc(std::vector<uint8_t>& b, size_t off) {
  put_u32(b, off + 20, crc32c({b.data() + off, 20}));
}

// Verifies that records read back are exactly the sample image's records.
void check_sample_records(const std::vector<RawRecord>& recs, const std::string& name) {
  ASSERT_EQ(recs.size(), 10u);
  const RecordType want[] = {RecordType::ImageInfo, RecordType::Process,     RecordType::Thread,
                             RecordType::Thread,    RecordType::Vma,         RecordType::Vma,
                             RecordType::Fd,        RecordType::FileContent, RecordType::Pages,
                             RecordType::Pages};
  uint64_t expect_offset = kFileHeaderSize;
  for (size_t i = 0; i < recs.size(); ++i) {
    EXPECT_EQ(recs[i].header.type, want[i]) << i;
    EXPECT_EQ(recs[i].number, i);
    EXPECT_EQ(recs[i].offset, expect_offset);
    EXPECT_EQ(recs[i].header.length, recs[i].payload.size());
    expect_offset += kRecordHeaderSize + recs[i].payload.size();
  }

  auto info = decode_record<ImageInfo>(recs[0], name);
  ASSERT_TRUE(info.ok()) << info.error().message;
  expect_eq(*info, sample_info());
  auto proc = decode_record<ProcessRecord>(recs[1], name);
  ASSERT_TRUE(proc.ok()) << proc.error().message;
  expect_eq(*proc, sample_process());
  auto t1 = decode_record<ThreadRecord>(recs[2], name);
  ASSERT_TRUE(t1.ok());
  expect_eq(*t1, sample_thread(4242, 4242));
  auto t2 = decode_record<ThreadRecord>(recs[3], name);
  ASSERT_TRUE(t2.ok());
  expect_eq(*t2, sample_thread(4242, 4243));
  auto vma = decode_record<VmaRecord>(recs[4], name);
  ASSERT_TRUE(vma.ok());
  expect_eq(*vma, sample_vma());
  auto fd = decode_record<FdRecord>(recs[6], name);
  ASSERT_TRUE(fd.ok());
  expect_eq(*fd, sample_fd());

  auto fc = decode_file_content(recs[7], name);
  ASSERT_TRUE(fc.ok()) << fc.error().message;
  expect_eq(fc->first, FileContentHeader{kSampleContentId, 100, 20000});
  EXPECT_EQ(std::vector<uint8_t>(fc->second.begin(), fc->second.end()), pattern(300, 9));

  auto p1 = decode_pages(recs[8], name);
  ASSERT_TRUE(p1.ok()) << p1.error().message;
  expect_eq(p1->first, sample_pages_header(4242, 0x555555554000, 2));
  EXPECT_EQ(std::vector<uint8_t>(p1->second.begin(), p1->second.end()), pattern(2 * 4096, 1));
  auto p2 = decode_pages(recs[9], name);
  ASSERT_TRUE(p2.ok()) << p2.error().message;
  expect_eq(p2->first, sample_pages_header(4242, 0x555555559000, 3));
  EXPECT_EQ(std::vector<uint8_t>(p2->second.begin(), p2->second.end()), pattern(3 * 4096, 2));
}

// ---- roundtrips -----------------------------------------------------------------------------

TEST(ImageFile, RoundtripThroughTempFile) {
  std::string path = ::testing::TempDir() + "crkit-image-XXXXXX";
  UniqueFd fd(mkstemp(path.data()));
  ASSERT_TRUE(fd.valid());
  {
    ImageWriter w(fd.get(), path);
    Status s = write_sample(w);
    ASSERT_TRUE(s.ok()) << s.error().message;
    struct stat st;
    ASSERT_EQ(fstat(fd.get(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), w.bytes_written());
  }
  UniqueFd rfd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(rfd.valid());
  ImageReader r(rfd.get(), path);
  ASSERT_TRUE(r.read_file_header().ok());
  EXPECT_EQ(r.version(), kVersion);
  std::vector<RawRecord> recs;
  for (;;) {
    auto n = r.next();
    ASSERT_TRUE(n.ok()) << n.error().message;
    if (!*n) break;
    recs.push_back(std::move(**n));
  }
  check_sample_records(recs, path);
  // After End, next() keeps returning nullopt.
  auto again = r.next();
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());
  ::unlink(path.c_str());
}

TEST(ImageFile, NextReadsFileHeaderIfNeeded) {
  UniqueFd fd = memfd_with(sample_image_bytes());
  ImageReader r(fd.get(), "x");
  size_t n = 0;
  for (;;) {
    auto rec = r.next();
    ASSERT_TRUE(rec.ok()) << rec.error().message;
    if (!*rec) break;
    ++n;
  }
  EXPECT_EQ(n, 10u);
  EXPECT_EQ(r.version(), kVersion);
}

// Writer and reader on the two ends of a pipe, with page data larger than the pipe buffer and
// the reader's buffer, so both short writes and direct reads happen.
TEST(ImageFile, RoundtripThroughPipe) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  const size_t big_pages = 1200;  // ~4.7 MiB
  std::vector<uint8_t> big = pattern(big_pages * 4096, 77);
  Status wstatus;
  std::thread writer([&] {
    ImageWriter w(wr.get(), "pipe:[w]");
    wstatus = [&]() -> Status {
      CRKIT_TRY(w.write_file_header());
      CRKIT_TRY(w.write(sample_info()));
      CRKIT_TRY(w.write(sample_process()));
      for (int i = 0; i < 50; ++i) CRKIT_TRY(w.write(sample_thread(4242, 4242 + i)));
      CRKIT_TRY(w.write_pages(sample_pages_header(4242, 0x7f0000000000, big_pages), big));
      std::vector<uint8_t> small = pattern(4096, 5);
      CRKIT_TRY(w.write_pages(sample_pages_header(4242, 0x7f1000000000, 1), small));
      return w.finish();
    }();
    wr.reset();
  });
  auto recs = read_all(rd.get(), "pipe:[r]");
  writer.join();
  ASSERT_TRUE(wstatus.ok()) << wstatus.error().message;
  ASSERT_TRUE(recs.ok()) << recs.error().message;
  ASSERT_EQ(recs->size(), 2u + 50u + 2u);
  for (int i = 0; i < 50; ++i) {
    auto t = decode_record<ThreadRecord>((*recs)[2 + i], "pipe");
    ASSERT_TRUE(t.ok());
    expect_eq(*t, sample_thread(4242, 4242 + i));
  }
  auto pg = decode_pages((*recs)[52], "pipe");
  ASSERT_TRUE(pg.ok()) << pg.error().message;
  EXPECT_EQ(pg->first.npages, big_pages);
  EXPECT_EQ(pg->first.vaddr, 0x7f0000000000u);
  ASSERT_EQ(pg->second.size(), big.size());
  EXPECT_TRUE(std::equal(big.begin(), big.end(), pg->second.begin()));
  auto pg2 = decode_pages((*recs)[53], "pipe");
  ASSERT_TRUE(pg2.ok());
  EXPECT_EQ(std::vector<uint8_t>(pg2->second.begin(), pg2->second.end()), pattern(4096, 5));
}

TEST(ImageFile, EmptyImageWithOnlyIndexAndEnd) {
  UniqueFd fd(memfd_create("t", MFD_CLOEXEC));
  ImageWriter w(fd.get(), "t");
  ASSERT_TRUE(w.write_file_header().ok());
  ASSERT_TRUE(w.finish().ok());
  EXPECT_EQ(w.bytes_written(),
            kFileHeaderSize + (kRecordHeaderSize + 4) + (kRecordHeaderSize + 16));
  auto recs = read_bytes(read_fd_all(fd.get()));
  ASSERT_TRUE(recs.ok()) << recs.error().message;
  EXPECT_TRUE(recs->empty());
}

TEST(ImageFile, OnDiskLayout) {
  Layout layout;
  std::vector<uint8_t> b = sample_image_bytes(&layout);
  ASSERT_EQ(layout.records.size(), 12u);
  EXPECT_EQ(std::memcmp(b.data(), "CRKITIMG", 8), 0);
  EXPECT_EQ(b[8], 3);
  EXPECT_EQ(b[9] | b[10] | b[11], 0);
  uint32_t hcrc = b[12] | b[13] << 8 | b[14] << 16 | static_cast<uint32_t>(b[15]) << 24;
  EXPECT_EQ(hcrc, crc32c({b.data(), 12}));
  for (const auto& rec : layout.records) {
    const uint8_t* h = b.data() + rec.offset;
    uint32_t type = h[0] | h[1] << 8 | h[2] << 16 | static_cast<uint32_t>(h[3]) << 24;
    EXPECT_EQ(type, static_cast<uint32_t>(rec.type));
    uint64_t len = 0;
    for (int i = 0; i < 8; ++i) len |= static_cast<uint64_t>(h[8 + i]) << (8 * i);
    EXPECT_EQ(len, rec.length);
    uint32_t pcrc = h[16] | h[17] << 8 | h[18] << 16 | static_cast<uint32_t>(h[19]) << 24;
    EXPECT_EQ(pcrc, crc32c({h + kRecordHeaderSize, rec.length}));
  }
  EXPECT_EQ(layout.records.back().offset + kRecordHeaderSize + 16, b.size());
}

// ---- writer errors --------------------------------------------------------------------------

TEST(ImageWriterErrors, NoSpace) {
  UniqueFd fd(::open("/dev/full", O_WRONLY | O_CLOEXEC));
  if (!fd) GTEST_SKIP() << "/dev/full not available";
  ImageWriter w(fd.get(), "ctx.full");
  Status s = w.write_file_header();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ENOSPC);
  EXPECT_CONTAINS(s.error().message, "writing image ctx.full");
}

TEST(ImageWriterErrors, BrokenPipe) {
  struct sigaction ign = {}, old = {};
  ign.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGPIPE, &ign, &old), 0);
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ::close(p[0]);
  UniqueFd wr(p[1]);
  ImageWriter w(wr.get(), "pipe");
  Status s = w.write_file_header();
  sigaction(SIGPIPE, &old, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, EPIPE);
  EXPECT_CONTAINS(s.error().message, "writing image pipe");
}

TEST(ImageWriterErrors, PageDataSizeMustMatchHeader) {
  UniqueFd fd(memfd_create("t", MFD_CLOEXEC));
  ImageWriter w(fd.get(), "t");
  std::vector<uint8_t> data(4096);
  Status s = w.write_pages(sample_pages_header(1, 0x1000, 2), data);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, EINVAL);
  EXPECT_EQ(w.bytes_written(), 0u);
}

// ---- reader: corruption ---------------------------------------------------------------------

// Flipping any payload byte of any record is detected as a checksum mismatch of that record.
TEST(ImageReaderErrors, CorruptedPayloadByteAnywhere) {
  Layout layout;
  const std::vector<uint8_t> good = sample_image_bytes(&layout);
  size_t checked = 0;
  for (size_t ri = 0; ri < layout.records.size(); ++ri) {
    const auto& rec = layout.records[ri];
    // All bytes of small payloads; a stride through big ones.
    size_t stride = rec.length > 2000 ? 97 : 1;
    for (size_t i = 0; i < rec.length; i += stride) {
      std::vector<uint8_t> bad = good;
      bad[rec.offset + kRecordHeaderSize + i] ^= 0x01;
      auto r = read_bytes(bad, "ctx.img");
      ASSERT_FALSE(r.ok()) << "record " << ri << " byte " << i;
      EXPECT_EQ(r.error().code, EIO);
      std::string want = fmt::format("ctx.img: record #{} ({}) at offset {}: checksum mismatch", ri,
                                     record_type_name(rec.type), rec.offset);
      ASSERT_EQ(r.error().message.rfind(want, 0), 0u) << r.error().message;
      ++checked;
    }
  }
  EXPECT_GT(checked, 2000u);
}

TEST(ImageReaderErrors, CorruptedRecordHeaderByteAnywhere) {
  Layout layout;
  const std::vector<uint8_t> good = sample_image_bytes(&layout);
  for (size_t ri = 0; ri < layout.records.size(); ++ri) {
    for (size_t i = 0; i < kRecordHeaderSize; ++i) {
      std::vector<uint8_t> bad = good;
      bad[layout.records[ri].offset + i] ^= 0x80;
      auto r = read_bytes(bad, "ctx.img");
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.error().code, EIO);
      EXPECT_EQ(r.error().message,
                fmt::format("ctx.img: record #{} at offset {}: header checksum mismatch "
                            "(corrupted image)",
                            ri, layout.records[ri].offset));
    }
  }
}

TEST(ImageReaderErrors, CorruptedFileHeaderCrc) {
  std::vector<uint8_t> b = sample_image_bytes();
  b[13] ^= 0xff;
  auto r = read_bytes(b, "ctx.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_CONTAINS(r.error().message, "checksum");
}

TEST(ImageReaderErrors, BadMagic) {
  std::vector<uint8_t> b = sample_image_bytes();
  b[0] = 'X';
  auto r = read_bytes(b, "ctx.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_EQ(r.error().message, "ctx.img: not a crkit image (bad magic)");
}

TEST(ImageReaderErrors, NotAnImageAtAll) {
  std::string text = "#!/bin/sh\necho hello\n";
  auto r = read_bytes(std::vector<uint8_t>(text.begin(), text.end()), "script.sh");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  // Short files that are not images are not "truncated".
  auto r2 = read_bytes({'E', 'L', 'F'}, "x");
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error().code, EINVAL);
}

TEST(ImageReaderErrors, WrongVersion) {
  std::vector<uint8_t> b = sample_image_bytes();
  put_u32(b, 8, 4);
  put_u32(b, 12, crc32c({b.data(), 12}));
  auto r = read_bytes(b, "ctx.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_EQ(r.error().message,
            "ctx.img: image format version 4 is not supported (this crkit reads versions 1 to 3)");
}

TEST(ImageReaderErrors, VersionOneIsAccepted) {
  std::vector<uint8_t> b = sample_image_bytes();
  put_u32(b, 8, 1);
  put_u32(b, 12, crc32c({b.data(), 12}));
  auto r = read_bytes(b, "ctx.img");
  EXPECT_TRUE(r.ok()) << r.error().message;
}

TEST(ImageReaderErrors, UnknownRecordType) {
  UniqueFd fd(memfd_create("t", MFD_CLOEXEC));
  ImageWriter w(fd.get(), "t");
  ASSERT_TRUE(w.write_file_header().ok());
  ASSERT_TRUE(w.write(sample_info()).ok());
  std::vector<uint8_t> payload = {1, 2, 3};
  ASSERT_TRUE(w.write_record(static_cast<RecordType>(42), payload).ok());
  ASSERT_TRUE(w.finish().ok());
  auto r = read_bytes(read_fd_all(fd.get()), "ctx.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_CONTAINS(r.error().message, "record #1 at offset");
  EXPECT_CONTAINS(r.error().message, "unknown record type 42");
}

TEST(ImageReaderErrors, OversizedLength) {
  Layout layout;
  std::vector<uint8_t> b = sample_image_bytes(&layout);
  size_t off = layout.records[1].offset;
  put_u64(b, off + 8, kMaxRecordPayload + 1);
  fix_header_crc(b, off);
  auto r = read_bytes(b, "ctx.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_CONTAINS(r.error().message, "record #1 (Process)");
  EXPECT_CONTAINS(r.error().message, "exceeds");
}

// ---- reader: truncation ---------------------------------------------------------------------

TEST(ImageReaderErrors, TruncatedAtEveryCutPoint) {
  Layout layout;
  const std::vector<uint8_t> good = sample_image_bytes(&layout);
  for (size_t cut = 0; cut < good.size(); ++cut) {
    // Every byte inside headers and small payloads; a stride through page data.
    bool in_big_payload = false;
    for (const auto& rec : layout.records)
      if (rec.length > 2000 && cut > rec.offset + kRecordHeaderSize + 64 &&
          cut < rec.offset + kRecordHeaderSize + rec.length - 64)
        in_big_payload = true;
    if (in_big_payload && cut % 211 != 0) continue;

    std::vector<uint8_t> part(good.begin(), good.begin() + cut);
    auto r = read_bytes(part, "ctx.img");
    ASSERT_FALSE(r.ok()) << "cut at " << cut;
    EXPECT_EQ(r.error().code, EIO) << r.error().message;
    EXPECT_CONTAINS(r.error().message, "ctx.img: truncated image");
  }
}

TEST(ImageReaderErrors, TruncatedMessages) {
  Layout layout;
  const std::vector<uint8_t> good = sample_image_bytes(&layout);
  const auto& pages = layout.records[8];
  ASSERT_EQ(pages.type, RecordType::Pages);

  // Mid-payload.
  {
    size_t cut = pages.offset + kRecordHeaderSize + 1000;
    auto r = read_bytes({good.begin(), good.begin() + cut}, "ctx.img");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message,
              fmt::format("ctx.img: truncated image: record #8 (Pages) at offset {} needs {} "
                          "bytes, only 1000 present",
                          pages.offset, pages.length));
  }
  // Mid-header.
  {
    size_t cut = pages.offset + 10;
    auto r = read_bytes({good.begin(), good.begin() + cut}, "ctx.img");
    ASSERT_FALSE(r.ok());
    EXPECT_CONTAINS(r.error().message, "truncated image: record #8 at offset");
    EXPECT_CONTAINS(r.error().message, "only 10 bytes present");
  }
  // At a record boundary, before the End record.
  {
    size_t cut = pages.offset;
    auto r = read_bytes({good.begin(), good.begin() + cut}, "ctx.img");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message,
              "ctx.img: truncated image: ends after record #7 without an End record");
  }
  // Only the file header.
  {
    auto r = read_bytes({good.begin(), good.begin() + kFileHeaderSize}, "ctx.img");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, EIO);
    EXPECT_CONTAINS(r.error().message, "without an End record");
  }
  // Empty.
  {
    auto r = read_bytes({}, "ctx.img");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, EIO);
    EXPECT_CONTAINS(r.error().message, "truncated");
  }
}

TEST(ImageReaderErrors, MissingEnd) {
  // A writer that never called finish().
  UniqueFd fd(memfd_create("t", MFD_CLOEXEC));
  ImageWriter w(fd.get(), "t");
  ASSERT_TRUE(w.write_file_header().ok());
  ASSERT_TRUE(w.write(sample_info()).ok());
  ASSERT_TRUE(w.write(sample_process()).ok());
  auto r = read_bytes(read_fd_all(fd.get()), "ctx.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_EQ(r.error().message,
            "ctx.img: truncated image: ends after record #1 without an End record");

  // Index present, End missing.
  Layout layout;
  std::vector<uint8_t> b = sample_image_bytes(&layout);
  b.resize(layout.records.back().offset);
  auto r2 = read_bytes(b, "ctx.img");
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error().code, EIO);
  EXPECT_CONTAINS(r2.error().message, "ends after record #10 without an End record");
}

TEST(ImageReaderErrors, TrailingGarbage) {
  std::vector<uint8_t> b = sample_image_bytes();
  b.push_back(0);
  auto r = read_bytes(b, "ctx.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_CONTAINS(r.error().message, "after the End record");

  // A second complete image appended is also trailing data.
  std::vector<uint8_t> two = sample_image_bytes();
  std::vector<uint8_t> again = two;
  two.insert(two.end(), again.begin(), again.end());
  auto r2 = read_bytes(two, "ctx.img");
  ASSERT_FALSE(r2.ok());
  EXPECT_CONTAINS(r2.error().message, "trailing");
}

// ---- reader: index and End consistency ------------------------------------------------------

// Writes a header, one record, then a hand-made Index and End.
std::vector<uint8_t> image_with_index(const IndexRecord& idx, std::optional<EndRecord> end_override,
                                      bool with_index = true) {
  UniqueFd fd(memfd_create("t", MFD_CLOEXEC));
  ImageWriter w(fd.get(), "t");
  EXPECT_TRUE(w.write_file_header().ok());
  EXPECT_TRUE(w.write(sample_info()).ok());
  uint64_t index_offset = w.bytes_written();
  if (with_index) {
    Encoder e;
    encode(e, idx);
    EXPECT_TRUE(w.write_record(RecordType::Index, e.buffer()).ok());
  }
  EndRecord end = end_override ? *end_override : EndRecord{1, index_offset};
  Encoder e;
  encode(e, end);
  EXPECT_TRUE(w.write_record(RecordType::End, e.buffer()).ok());
  return read_fd_all(fd.get());
}

IndexRecord correct_index() {
  Encoder e;
  encode(e, sample_info());
  IndexRecord idx;
  idx.entries = {{RecordType::ImageInfo, kFileHeaderSize, e.buffer().size()}};
  return idx;
}

TEST(ImageReaderIndex, HandMadeCorrectIndexIsAccepted) {
  auto r = read_bytes(image_with_index(correct_index(), std::nullopt), "ctx.img");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->size(), 1u);
}

TEST(ImageReaderIndex, WrongEntry) {
  IndexRecord idx = correct_index();
  idx.entries[0].length += 1;
  auto r = read_bytes(image_with_index(idx, std::nullopt), "ctx.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_CONTAINS(r.error().message, "record #1 (Index)");
  EXPECT_CONTAINS(r.error().message, "does not match record #0");
}

TEST(ImageReaderIndex, WrongCount) {
  IndexRecord idx = correct_index();
  idx.entries.push_back(idx.entries[0]);
  auto r = read_bytes(image_with_index(idx, std::nullopt), "ctx.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_CONTAINS(r.error().message, "lists 2 records but 1 were read");
}

TEST(ImageReaderIndex, EndWithoutIndex) {
  auto r = read_bytes(image_with_index({}, EndRecord{1, 0}, false), "ctx.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_CONTAINS(r.error().message, "without a preceding Index");
}

TEST(ImageReaderIndex, EndDisagrees) {
  auto r = read_bytes(image_with_index(correct_index(), EndRecord{2, 0}), "ctx.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_CONTAINS(r.error().message, "(End)");
}

TEST(ImageReaderIndex, DataRecordAfterIndex) {
  UniqueFd fd(memfd_create("t", MFD_CLOEXEC));
  ImageWriter w(fd.get(), "t");
  ASSERT_TRUE(w.write_file_header().ok());
  Encoder e;
  encode(e, IndexRecord{});
  ASSERT_TRUE(w.write_record(RecordType::Index, e.buffer()).ok());
  ASSERT_TRUE(w.write(sample_info()).ok());
  auto r = read_bytes(read_fd_all(fd.get()), "ctx.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_CONTAINS(r.error().message, "after the Index");
}

// ---- payload helpers ------------------------------------------------------------------------

TEST(DecodePages, SizeMismatchIsAnError) {
  RawRecord r;
  r.header.type = RecordType::Pages;
  r.number = 3;
  r.offset = 99;
  Encoder e;
  encode(e, sample_pages_header(1, 0x1000, 2));
  e.raw(std::vector<uint8_t>(4096));
  r.payload = e.buffer();
  auto p = decode_pages(r, "ctx.img");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, EIO);
  EXPECT_CONTAINS(p.error().message, "ctx.img: record #3 (Pages) at offset 99");
}

TEST(DecodePages, WrongRecordType) {
  RawRecord r;
  r.header.type = RecordType::Vma;
  auto p = decode_pages(r, "ctx.img");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, EINVAL);
}

TEST(DecodePages, TruncatedHeaderNamesField) {
  RawRecord r;
  r.header.type = RecordType::Pages;
  r.payload = {1, 2, 3, 4, 5, 6};
  auto p = decode_pages(r, "ctx.img");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, EIO);
  EXPECT_CONTAINS(p.error().message, "field 'vaddr'");
}

TEST(DecodeFileContent, BeyondTotalSize) {
  RawRecord r;
  r.header.type = RecordType::FileContent;
  Encoder e;
  encode(e, FileContentHeader{1, 10, 12});
  e.raw(std::vector<uint8_t>(3));
  r.payload = e.buffer();
  auto p = decode_file_content(r, "ctx.img");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, EIO);
}

}  // namespace
}  // namespace crkit::image
