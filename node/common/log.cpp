#include "common/log.hpp"

#include <atomic>
#include <string>

namespace crkit::log {
namespace {
// Process-wide settings written once at tool start-up (the only mutable globals outside libcr).
std::atomic<Level> g_threshold{Level::Normal};
std::string g_program = "crkit";
}  // namespace

Level threshold() {
  return g_threshold.load(std::memory_order_relaxed);
}
void set_threshold(Level l) {
  g_threshold.store(l, std::memory_order_relaxed);
}
void set_program(std::string_view name) {
  g_program = std::string(name);
}
std::string_view program() {
  return g_program;
}
}  // namespace crkit::log
