// Progress line on a terminal for long dumps and restores (bytes done, rate, ETA).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace crkit::tools {

class Progress {
 public:
  Progress(bool on, std::string program)
      : on_(on), program_(std::move(program)), start_(std::chrono::steady_clock::now()) {}
  void operator()(uint64_t done, uint64_t total) {
    if (!on_ || total < (64ull << 20)) return;  // small jobs finish before anyone reads it
    auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    double eta = rate > 0 ? static_cast<double>(total - done) / rate : 0;
    std::fprintf(stderr, "\r%s: memory %llu/%llu MiB  %.0f MiB/s  ETA %.1fs   ", program_.c_str(),
                 static_cast<unsigned long long>(done >> 20),
                 static_cast<unsigned long long>(total >> 20), rate / (1 << 20), eta);
    if (done >= total) std::fprintf(stderr, "\n");
  }

 private:
  bool on_;
  std::string program_;
  std::chrono::steady_clock::time_point start_, last_{};
};

}  // namespace crkit::tools
