#include "resources/context.hpp"

namespace crkit::resources {

std::string RestoreTarget::relocate(const std::string& path) const {
  // BLCR semantics: prefix replacement on whole leading path components; first match wins.
  // Both sides are absolute with trailing '/' trimmed, so "/" is the only one ending in '/'.
  for (const auto& [from, to] : relocations) {
    if (path == from) return to;
    const bool root = from == "/";
    if (path.size() > from.size() && path.compare(0, from.size(), from) == 0 &&
        (root || path[from.size()] == '/')) {
      std::string rest = path.substr(root ? 0 : from.size());  // starts with '/'
      return to == "/" ? rest : to + rest;
    }
  }
  return path;
}

image::FileIdentity file_identity(const struct stat& st) {
  image::FileIdentity id;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  id.size = static_cast<uint64_t>(st.st_size);
  id.mtime_sec = st.st_mtim.tv_sec;
  id.mtime_nsec = st.st_mtim.tv_nsec;
  id.mode = st.st_mode;
  return id;
}

}  // namespace crkit::resources
