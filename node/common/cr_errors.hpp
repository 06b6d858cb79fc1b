// BLCR's error codes (blcr_errcodes.h values). Tools exit with the low 8 bits of an errno or
// of one of these, as BLCR's tools do.
#pragma once

namespace crkit {

inline constexpr int kCrETempFail = 2354;   // exit 50
inline constexpr int kCrEPermFail = 2355;   // exit 51
inline constexpr int kCrENoSupport = 2356;  // exit 52
inline constexpr int kCrEVersion = 2357;    // exit 53
inline constexpr int kCrEOmitted = 2358;    // exit 54
inline constexpr int kCrEBadArch = 2359;    // exit 55: image does not match this machine
inline constexpr int kCrEPtraced = 2360;    // exit 56
inline constexpr int kCrEPtracer = 2361;    // exit 57
inline constexpr int kCrERstrtAbrt = 2362;  // exit 58

inline int exit_code_of(int code) {
  return code & 0xff;
}

}  // namespace crkit
