// Minimal leveled logging to stderr. Verbosity is a per-invocation setting passed around in
// Options structs; the logger itself only holds the threshold chosen by the tool's main().
#pragma once

#include <cstdio>
#include <string_view>

#include <fmt/format.h>

namespace crkit::log {

enum class Level { Quiet = 0, Normal = 1, Verbose = 2, Debug = 3 };

// Set once by a tool's main() before any work starts; read-only afterwards.
Level threshold();
void set_threshold(Level l);
void set_program(std::string_view name);
std::string_view program();

template <class... Args>
void at(Level l, fmt::format_string<Args...> f, Args&&... args) {
  if (threshold() < l) return;
  std::string s = fmt::format(f, std::forward<Args>(args)...);
  std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(program().size()), program().data(),
               s.c_str());
}
template <class... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  at(Level::Normal, f, std::forward<Args>(args)...);
}
template <class... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (threshold() < Level::Normal) return;
  std::string s = fmt::format(f, std::forward<Args>(args)...);
  std::fprintf(stderr, "%.*s: warning: %s\n", static_cast<int>(program().size()), program().data(),
               s.c_str());
}
template <class... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  at(Level::Verbose, f, std::forward<Args>(args)...);
}
template <class... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  at(Level::Debug, f, std::forward<Args>(args)...);
}

}  // namespace crkit::log
