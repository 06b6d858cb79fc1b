// The PMI-1 wire format ("simple PMI") that MPICH's client (src/pmi/simple/simple_pmi.c,
// simple_pmiutil.c) and Hydra's proxy speak: one command per '\n'-terminated line, written as
// space-separated key=value tokens, "cmd=NAME k=v k=v". Only the client's own tokenizer
// (PMIU_parse_keyvals) defines what a value may hold, so this parser does exactly what it does.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.hpp"

namespace crkit::pmi {

// The limits announced in "cmd=maxes": Hydra's PMI_MAXKVSLEN, PMI_MAXKEYLEN and PMI_MAXVALLEN
// (pm/pmiserv/common.h). They are buffer sizes that include the terminating NUL. MPICH 4.0's
// client lowers vallen_max so that "cmd=put kvsname= key= value=" fits its 1024-byte line
// (1024 - 256 - 64 - 30 = 674), so a value longer than that never reaches us from MPICH.
inline constexpr int kKvsnameMax = 256;
inline constexpr int kKeylenMax = 64;
inline constexpr int kVallenMax = 1024;

// A request longer than this without a newline is not PMI (the client's lines are at most
// PMIU_MAXLINE = 1024 bytes); the server drops such a connection instead of buffering forever.
inline constexpr size_t kMaxLineBytes = 64 * 1024;

struct Command {
  // The value of "cmd=" (or of "mcmd=" when multi_line: the spawn form, whose remaining
  // arguments follow one per line up to "endcmd").
  std::string name;
  bool multi_line = false;
  // Every other token in line order. Duplicate keys are kept; find() returns the first, like
  // the client's PMIU_getval.
  std::vector<std::pair<std::string, std::string>> args;

  const std::string* find(std::string_view key) const;
};

// Parses one line without its '\n'. Tokens are separated by runs of ' ' (only the blank, as in
// PMIU_parse_keyvals); a token splits at its FIRST '=', so a value may contain '=' but never a
// space, and may be empty ("value="). A token without '=' or with an empty key, or a line
// without a cmd=/mcmd= token, is an error that quotes the offending part.
Result<Command> parse_command(std::string_view line);

// Formats "cmd=NAME k=v ...\n". Values are written as given: callers pass wire_token() text
// for anything free-form.
std::string format_command(
    std::string_view name,
    std::initializer_list<std::pair<std::string_view, std::string_view>> args);

// Makes free text (an error message) fit in one value: the client would cut it at the first
// blank and a newline would end the line, so blanks and control characters become '_'.
std::string wire_token(std::string_view text);

}  // namespace crkit::pmi
