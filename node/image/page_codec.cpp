#include "image/page_codec.hpp"

#include <lz4.h>

#include <charconv>
#include <climits>
#include <cstring>

#include <fmt/format.h>

namespace crkit::image {

const char* compression_name(Compression c) {
  switch (c) {
    case Compression::None:
      return "none";
    case Compression::Lz4:
      return "lz4";
    case Compression::Zstd:
      return "zstd";
  }
  return "unknown";
}

Result<CompressionSpec> parse_compression(std::string_view text) {
  auto bad = [&](const char* why) {
    return fail(EINVAL, fmt::format("--compress={}: {} (use none, lz4, zstd or zstd:LEVEL with "
                                    "LEVEL 1..19)",
                                    text, why));
  };
  if (text == "none") return CompressionSpec{Compression::None, 0};
  if (text == "lz4") return CompressionSpec{Compression::Lz4, 0};
  if (text == "zstd") return CompressionSpec{Compression::Zstd, 0};
  if (text.starts_with("zstd:")) {
    std::string_view num = text.substr(5);
    int level = 0;
    auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), level);
    if (ec != std::errc() || p != num.data() + num.size() || num.empty())
      return bad("the level is not a number");
    if (level < 1 || level > 19) return bad("the level is out of range");
    return CompressionSpec{Compression::Zstd, level};
  }
  return bad("unknown compression");
}

std::string to_string(const CompressionSpec& s) {
  if (s.kind == Compression::Zstd && s.level) return fmt::format("zstd:{}", s.level);
  return compression_name(s.kind);
}

PageCompressor::PageCompressor(CompressionSpec spec) : spec_(spec) {
  if (spec_.kind == Compression::Zstd) zctx_ = ZSTD_createCCtx();
}

PageCompressor::~PageCompressor() {
  ZSTD_freeCCtx(zctx_);
}

PageCompressor::PageCompressor(PageCompressor&& o) noexcept
    : spec_(o.spec_),
      zctx_(o.zctx_),
      probe_in_(std::move(o.probe_in_)),
      probe_out_(std::move(o.probe_out_)) {
  o.zctx_ = nullptr;
}

PageCompressor& PageCompressor::operator=(PageCompressor&& o) noexcept {
  if (this != &o) {
    ZSTD_freeCCtx(zctx_);
    spec_ = o.spec_;
    zctx_ = o.zctx_;
    o.zctx_ = nullptr;
    probe_in_ = std::move(o.probe_in_);
    probe_out_ = std::move(o.probe_out_);
  }
  return *this;
}

size_t PageCompressor::bound(size_t n) const {
  switch (spec_.kind) {
    case Compression::None:
      return n;
    case Compression::Lz4:
      return static_cast<size_t>(LZ4_compressBound(static_cast<int>(std::min<size_t>(n, INT_MAX))));
    case Compression::Zstd:
      return ZSTD_compressBound(n);
  }
  return n;
}

Result<size_t> PageCompressor::compress(std::span<const uint8_t> src, std::span<uint8_t> dst) {
  constexpr size_t kSample = 4096, kSamples = 16;  // 64 KiB: 1.5% of a 4 MiB batch
  if (spec_.kind != Compression::None && src.size() >= 64 * kSample) {
    probe_in_.resize(kSample * kSamples);
    probe_out_.resize(bound(probe_in_.size()));
    const size_t step = (src.size() - kSample) / (kSamples - 1);
    for (size_t i = 0; i < kSamples; ++i)
      std::memcpy(probe_in_.data() + i * kSample, src.data() + i * step, kSample);
    CRKIT_ASSIGN(size_t n, compress_block(probe_in_, probe_out_));
    if (n == 0 || n > probe_in_.size() * 97 / 100) return size_t{0};
  }
  return compress_block(src, dst);
}

Result<size_t> PageCompressor::compress_block(std::span<const uint8_t> src,
                                              std::span<uint8_t> dst) {
  if (src.empty()) return size_t{0};
  switch (spec_.kind) {
    case Compression::None:
      return size_t{0};
    case Compression::Lz4: {
      if (src.size() > static_cast<size_t>(LZ4_MAX_INPUT_SIZE))
        return fail(EINVAL, fmt::format("lz4: {} bytes are too many for one block", src.size()));
      // Output limited to less than the input: lz4 gives up (0) when it cannot do better.
      int cap = static_cast<int>(std::min(dst.size(), src.size() - 1));
      int n = LZ4_compress_default(reinterpret_cast<const char*>(src.data()),
                                   reinterpret_cast<char*>(dst.data()),
                                   static_cast<int>(src.size()), cap);
      return static_cast<size_t>(n > 0 ? n : 0);
    }
    case Compression::Zstd: {
      if (!zctx_) return fail(ENOMEM, "zstd: cannot create a compression context");
      size_t n = ZSTD_compressCCtx(zctx_, dst.data(), dst.size(), src.data(), src.size(),
                                   spec_.level ? spec_.level : 1);
      if (ZSTD_isError(n)) return fail(EIO, fmt::format("zstd: {}", ZSTD_getErrorName(n)));
      return n < src.size() ? n : size_t{0};
    }
  }
  return size_t{0};
}

PageDecompressor::PageDecompressor() : zctx_(ZSTD_createDCtx()) {}

PageDecompressor::~PageDecompressor() {
  ZSTD_freeDCtx(zctx_);
}

Status PageDecompressor::decompress(Compression kind, std::span<const uint8_t> src,
                                    std::span<uint8_t> dst) {
  switch (kind) {
    case Compression::None:
      if (src.size() != dst.size())
        return fail(EBADMSG, fmt::format("{} bytes of raw page data where {} were expected",
                                         src.size(), dst.size()));
      std::copy(src.begin(), src.end(), dst.begin());
      return {};
    case Compression::Lz4: {
      if (src.size() > INT_MAX || dst.size() > INT_MAX)
        return fail(EBADMSG, "lz4: block too large");
      int n = LZ4_decompress_safe(reinterpret_cast<const char*>(src.data()),
                                  reinterpret_cast<char*>(dst.data()), static_cast<int>(src.size()),
                                  static_cast<int>(dst.size()));
      if (n < 0) return fail(EBADMSG, "lz4: corrupt compressed data");
      if (static_cast<size_t>(n) != dst.size())
        return fail(EBADMSG, fmt::format("lz4: data decompressed to {} bytes where {} were "
                                         "expected",
                                         n, dst.size()));
      return {};
    }
    case Compression::Zstd: {
      if (!zctx_) return fail(ENOMEM, "zstd: cannot create a decompression context");
      size_t n = ZSTD_decompressDCtx(zctx_, dst.data(), dst.size(), src.data(), src.size());
      if (ZSTD_isError(n)) return fail(EBADMSG, fmt::format("zstd: {}", ZSTD_getErrorName(n)));
      if (n != dst.size())
        return fail(EBADMSG, fmt::format("zstd: data decompressed to {} bytes where {} were "
                                         "expected",
                                         n, dst.size()));
      return {};
    }
  }
  return fail(EBADMSG, fmt::format("unknown page compression {}", static_cast<uint32_t>(kind)));
}

}  // namespace crkit::image
