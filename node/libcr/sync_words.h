// Atomic access and futex waits on plain integers, as both libcr and the checkpoint engine
// use them on the words of the control block (and libcr on its own). Async-signal-safe.
#pragma once

#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace crkit::libcr {

template <typename T>
inline T load(const T* p) {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
template <typename T>
inline void store(T* p, T v) {
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
template <typename T>
inline T add(T* p, T v) {  // returns the new value
  return __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL);
}
template <typename T>
inline bool cas(T* p, T expected, T desired) {
  return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE);
}

// shared: the word may be in memory another process maps (the control block).
// timeout_ms < 0: no time limit.
inline long futex_wait(uint32_t* addr, uint32_t val, long timeout_ms, bool shared) {
  struct timespec ts = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000};
  return ::syscall(SYS_futex, addr, shared ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE, val,
                   timeout_ms >= 0 ? &ts : nullptr, nullptr, 0);
}
inline void futex_wake(uint32_t* addr, bool shared) {
  ::syscall(SYS_futex, addr, shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, 0x7fffffff, nullptr, nullptr,
            0);
}

}  // namespace crkit::libcr
