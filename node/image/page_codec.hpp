// Compression of page data in the image: none, lz4 or zstd[:level], chosen per checkpoint
// (--compress). Each PageBatch record is compressed on its own, so batches are produced and
// consumed in parallel and any one can be decoded alone.
#pragma once

#include <zstd.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace crkit::image {

// On-disk values of PageBatchHeader::compression.
enum class Compression : uint32_t { None = 0, Lz4 = 1, Zstd = 2 };
const char* compression_name(Compression c);

struct CompressionSpec {
  Compression kind = Compression::None;
  int level = 0;  // zstd only: 1..19 (0 = its default for speed, 1)
  bool operator==(const CompressionSpec&) const = default;
};
// "none", "lz4", "zstd" or "zstd:LEVEL". EINVAL naming the text otherwise.
Result<CompressionSpec> parse_compression(std::string_view text);
std::string to_string(const CompressionSpec& s);

// One per thread: keeps the compression contexts between calls (zstd's are costly to make).
class PageCompressor {
 public:
  explicit PageCompressor(CompressionSpec spec);
  ~PageCompressor();
  PageCompressor(const PageCompressor&) = delete;
  PageCompressor& operator=(const PageCompressor&) = delete;
  PageCompressor(PageCompressor&&) noexcept;
  PageCompressor& operator=(PageCompressor&&) noexcept;

  const CompressionSpec& spec() const { return spec_; }
  // Largest output compress() may produce for n input bytes.
  size_t bound(size_t n) const;
  // Compresses src into dst (dst.size() >= bound(src.size())). Returns the compressed size,
  // or 0 when compression would not make the data smaller (store it raw then). A large src is
  // probed first: when 16 pages spread over it do not shrink by 3%, it is stored raw without
  // compressing the rest (random data then costs almost nothing).
  Result<size_t> compress(std::span<const uint8_t> src, std::span<uint8_t> dst);

 private:
  Result<size_t> compress_block(std::span<const uint8_t> src, std::span<uint8_t> dst);
  CompressionSpec spec_;
  ZSTD_CCtx* zctx_ = nullptr;
  std::vector<uint8_t> probe_in_, probe_out_;
};

// One per thread.
class PageDecompressor {
 public:
  PageDecompressor();
  ~PageDecompressor();
  PageDecompressor(const PageDecompressor&) = delete;
  PageDecompressor& operator=(const PageDecompressor&) = delete;
  // Decompresses src into exactly dst.size() bytes; EBADMSG (with the codec's reason) when the
  // data is corrupt or does not decode to exactly that size.
  Status decompress(Compression kind, std::span<const uint8_t> src, std::span<uint8_t> dst);

 private:
  ZSTD_DCtx* zctx_ = nullptr;
};

}  // namespace crkit::image
