#include "pmi/wire.hpp"

#include <cerrno>

#include <fmt/format.h>

namespace crkit::pmi {

const std::string* Command::find(std::string_view key) const {
  for (const auto& [k, v] : args) {
    if (k == key) return &v;
  }
  return nullptr;
}

Result<Command> parse_command(std::string_view line) {
  Command cmd;
  bool have_name = false;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    if (i == line.size()) break;
    size_t end = line.find(' ', i);
    if (end == std::string_view::npos) end = line.size();
    std::string_view token = line.substr(i, end - i);
    i = end;

    size_t eq = token.find('=');
    if (eq == std::string_view::npos) {
      return fail(EINVAL, fmt::format("PMI token '{}' has no '='", token));
    }
    if (eq == 0) return fail(EINVAL, fmt::format("PMI token '{}' has an empty key", token));
    std::string_view key = token.substr(0, eq);
    std::string_view value = token.substr(eq + 1);
    if (!have_name && (key == "cmd" || key == "mcmd")) {
      cmd.name = std::string(value);
      cmd.multi_line = key == "mcmd";
      have_name = true;
      continue;
    }
    cmd.args.emplace_back(std::string(key), std::string(value));
  }
  if (!have_name) {
    return fail(EINVAL, fmt::format("PMI line '{}' has no cmd= token", line));
  }
  return cmd;
}

std::string format_command(
    std::string_view name,
    std::initializer_list<std::pair<std::string_view, std::string_view>> args) {
  std::string out = fmt::format("cmd={}", name);
  for (const auto& [k, v] : args) {
    out += ' ';
    out += k;
    out += '=';
    out += v;
  }
  out += '\n';
  return out;
}

std::string wire_token(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    out += (u <= ' ' || u == 0x7f) ? '_' : c;
  }
  return out;
}

}  // namespace crkit::pmi
