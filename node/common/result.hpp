// Result<T>: an expected-like value-or-error type (std::expected is C++23; we target C++20).
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace crkit {

// An error carries an errno-style code (it becomes the tool's exit code, as in BLCR)
// and a message that says what failed, on which process/file, and why.
struct Error {
  int code = 0;
  std::string message;

  // Prefix context ("restoring fd 3: " + message), keeping the code.
  Error context(const std::string& what) const { return Error{code, what + ": " + message}; }
};

// Builds an Error from errno (or an explicit errno value) with the errno text appended.
inline Error sys_error(int err, const std::string& what) {
  return Error{err, fmt::format("{}: {}", what, std::strerror(err))};
}
inline Error errno_error(const std::string& what) {
  return sys_error(errno, what);
}
inline Error make_error(int code, std::string message) {
  return Error{code, std::move(message)};
}

struct Unexpected {
  Error error;
};
inline Unexpected fail(Error e) {
  return Unexpected{std::move(e)};
}
inline Unexpected fail(int code, std::string message) {
  return Unexpected{Error{code, std::move(message)}};
}
inline Unexpected fail_errno(const std::string& what) {
  return Unexpected{errno_error(what)};
}
inline Unexpected fail_sys(int err, const std::string& what) {
  return Unexpected{sys_error(err, what)};
}

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Unexpected u) : v_(std::in_place_index<1>, std::move(u.error)) {}
  Result(Error e) : v_(std::in_place_index<1>, std::move(e)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { return std::get<1>(v_); }
  Error& error() { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Unexpected u) : err_(std::move(u.error)), failed_(true) {}
  Result(Error e) : err_(std::move(e)), failed_(true) {}
  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return err_; }
  Error& error() { return err_; }

 private:
  Error err_;
  bool failed_ = false;
};

using Status = Result<void>;

}  // namespace crkit

// Propagate an error from an expression returning Result<...>.
#define CRKIT_TRY(expr)                                            \
  do {                                                             \
    auto&& crkit_try_r_ = (expr);                                  \
    if (!crkit_try_r_) return ::crkit::fail(crkit_try_r_.error()); \
  } while (0)

#define CRKIT_CONCAT_INNER(a, b) a##b
#define CRKIT_CONCAT(a, b) CRKIT_CONCAT_INNER(a, b)
// Assign the value of a Result or propagate its error: CRKIT_ASSIGN(auto x, f());
#define CRKIT_ASSIGN(decl, expr) CRKIT_ASSIGN_IMPL(CRKIT_CONCAT(crkit_r_, __LINE__), decl, expr)
#define CRKIT_ASSIGN_IMPL(tmp, decl, expr)                \
  auto tmp = (expr);                                      \
  if (!tmp) return ::crkit::fail(std::move(tmp.error())); \
  decl = std::move(tmp.value())
