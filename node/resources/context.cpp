#include "resources/context.hpp"

namespace crkit::resources {

std::string RestoreTarget::relocate(const std::string& path) const {
  // BLCR semantics: prefix replacement on whole leading path components; first match wins.
  for (const auto& [from, to] : relocations) {
    if (path == from) return to;
    if (path.size() > from.size() && path.compare(0, from.size(), from) == 0 &&
        (from == "/" || path[from.size()] == '/'))
      return to + path.substr(from.size());
  }
  return path;
}

}  // namespace crkit::resources
