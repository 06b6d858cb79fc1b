// /proc/PID/stat and /proc/PID/status.
#include <fmt/format.h>

#include "proc/proc.hpp"

namespace crkit::proc {

namespace {

constexpr size_t kStatFields = 52;  // fields 1..52 (exit_code) exist since Linux 3.5

Result<Stat> parse_stat_named(std::string_view text, std::string_view file) {
  // comm (field 2) is between the first '(' and the LAST ')': it may contain ") (".
  size_t open = text.find('(');
  size_t close = text.rfind(')');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open) {
    return detail::parse_error(file, 0, "no parenthesized command name");
  }
  Stat st;
  auto pid = detail::to_num<pid_t>(detail::trim(text.substr(0, open)));
  if (!pid) return detail::parse_error(file, 0, "bad pid (field 1)");
  st.pid = *pid;
  st.comm = std::string(text.substr(open + 1, close - open - 1));

  std::vector<std::string_view> f = detail::split_ws(text.substr(close + 1));
  // f[0] is field 3.
  if (f.size() + 2 < kStatFields) {
    return detail::parse_error(
        file, 0, fmt::format("expected at least {} fields, got {}", kStatFields, f.size() + 2));
  }
  auto field = [&](size_t n) { return f[n - 3]; };
  std::optional<std::string> bad;
  auto get = [&]<class T>(T& out, size_t n) {
    auto v = detail::to_num<T>(field(n));
    if (!v) {
      if (!bad) bad = fmt::format("bad field {} \"{}\"", n, field(n));
      return;
    }
    out = *v;
  };
  if (field(3).size() != 1) return detail::parse_error(file, 0, "bad state (field 3)");
  st.state = field(3)[0];
  get(st.ppid, 4);
  get(st.pgrp, 5);
  get(st.session, 6);
  get(st.tty_nr, 7);
  get(st.flags, 9);
  get(st.num_threads, 20);
  get(st.start_time, 22);
  get(st.start_code, 26);
  get(st.end_code, 27);
  get(st.start_stack, 28);
  get(st.exit_signal, 38);
  get(st.start_data, 45);
  get(st.end_data, 46);
  get(st.start_brk, 47);
  get(st.arg_start, 48);
  get(st.arg_end, 49);
  get(st.env_start, 50);
  get(st.env_end, 51);
  get(st.exit_code, 52);
  if (bad) return detail::parse_error(file, 0, *bad);
  return st;
}

// Undoes the kernel's escaping of the Name: value ("\\" and "\n").
std::string unescape_name(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == '\\' || s[i + 1] == 'n')) {
      out += s[i + 1] == 'n' ? '\n' : '\\';
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

template <class T>
std::optional<std::string> to_list(std::string_view v, std::vector<T>& out) {
  out.clear();
  for (std::string_view w : detail::split_ws(v)) {
    auto n = detail::to_num<T>(w);
    if (!n) return fmt::format("bad number \"{}\"", w);
    out.push_back(*n);
  }
  return std::nullopt;
}

Result<Status> parse_status_named(std::string_view text, std::string_view file) {
  Status st;
  bool seen_name = false, seen_state = false, seen_tgid = false, seen_pid = false,
       seen_ppid = false, seen_uid = false, seen_gid = false;
  size_t lineno = 0;
  for (std::string_view line : detail::split_lines(text)) {
    ++lineno;
    if (line.empty()) continue;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      return detail::parse_error(file, lineno, fmt::format("no ':' in \"{}\"", line));
    }
    std::string_view key = line.substr(0, colon);
    std::string_view raw = line.substr(colon + 1);
    std::string_view v = detail::trim(raw);
    std::optional<std::string> bad;
    auto num = [&]<class T>(T& out, int base = 10) {
      auto n = detail::to_num<T>(v, base);
      if (!n) {
        bad = fmt::format("bad {} value \"{}\"", key, v);
        return;
      }
      out = *n;
    };
    auto quad = [&](uint32_t(&out)[4]) {
      std::vector<uint32_t> l;
      if ((bad = to_list(v, l))) return;
      if (l.size() != 4) {
        bad = fmt::format("expected 4 {} values, got {}", key, l.size());
        return;
      }
      for (size_t i = 0; i < 4; ++i) out[i] = l[i];
    };
    if (key == "Name") {
      // "Name:\t<comm>": the name may start or end with blanks, so strip only the tab.
      if (!raw.empty() && raw.front() == '\t') raw.remove_prefix(1);
      st.name = unescape_name(raw);
      seen_name = true;
    } else if (key == "State") {
      if (v.empty())
        bad = "empty State";
      else
        st.state = v[0];
      seen_state = true;
    } else if (key == "Tgid") {
      num(st.tgid);
      seen_tgid = true;
    } else if (key == "Pid") {
      num(st.pid);
      seen_pid = true;
    } else if (key == "PPid") {
      num(st.ppid);
      seen_ppid = true;
    } else if (key == "TracerPid") {
      num(st.tracer_pid);
    } else if (key == "Uid") {
      quad(st.uid);
      seen_uid = true;
    } else if (key == "Gid") {
      quad(st.gid);
      seen_gid = true;
    } else if (key == "Groups") {
      bad = to_list(v, st.groups);
    } else if (key == "Umask") {
      num(st.umask, 8);
    } else if (key == "NStgid") {
      bad = to_list(v, st.nstgid);
    } else if (key == "NSpid") {
      bad = to_list(v, st.nspid);
    } else if (key == "NSpgid") {
      bad = to_list(v, st.nspgid);
    } else if (key == "NSsid") {
      bad = to_list(v, st.nssid);
    } else if (key == "Threads") {
      num(st.threads);
    } else if (key == "SigPnd") {
      num(st.sig_pnd, 16);
    } else if (key == "ShdPnd") {
      num(st.shd_pnd, 16);
    } else if (key == "SigBlk") {
      num(st.sig_blk, 16);
    } else if (key == "SigIgn") {
      num(st.sig_ign, 16);
    } else if (key == "SigCgt") {
      num(st.sig_cgt, 16);
    } else if (key == "CapInh") {
      num(st.cap_inh, 16);
    } else if (key == "CapPrm") {
      num(st.cap_prm, 16);
    } else if (key == "CapEff") {
      num(st.cap_eff, 16);
    } else if (key == "CapBnd") {
      num(st.cap_bnd, 16);
    } else if (key == "CapAmb") {
      num(st.cap_amb, 16);
    } else if (key == "NoNewPrivs") {
      num(st.no_new_privs);
    } else if (key == "Seccomp") {
      num(st.seccomp);
    }
    if (bad) return detail::parse_error(file, lineno, *bad);
  }
  const char* missing = !seen_name    ? "Name"
                        : !seen_state ? "State"
                        : !seen_tgid  ? "Tgid"
                        : !seen_pid   ? "Pid"
                        : !seen_ppid  ? "PPid"
                        : !seen_uid   ? "Uid"
                        : !seen_gid   ? "Gid"
                                      : nullptr;
  if (missing) return detail::parse_error(file, 0, fmt::format("no {}: line", missing));
  return st;
}

}  // namespace

Result<Stat> parse_stat(std::string_view text) {
  return parse_stat_named(text, "stat");
}

Result<Stat> read_stat(pid_t pid) {
  std::string path = fmt::format("/proc/{}/stat", pid);
  CRKIT_ASSIGN(std::string text, read_file(path));
  return parse_stat_named(text, path);
}

Result<Stat> read_task_stat(pid_t pid, pid_t tid) {
  std::string path = fmt::format("/proc/{}/task/{}/stat", pid, tid);
  CRKIT_ASSIGN(std::string text, read_file(path));
  return parse_stat_named(text, path);
}

Result<Status> parse_status(std::string_view text) {
  return parse_status_named(text, "status");
}

Result<Status> read_status(pid_t pid) {
  std::string path = fmt::format("/proc/{}/status", pid);
  CRKIT_ASSIGN(std::string text, read_file(path));
  return parse_status_named(text, path);
}

Result<Status> read_task_status(pid_t pid, pid_t tid) {
  std::string path = fmt::format("/proc/{}/task/{}/status", pid, tid);
  CRKIT_ASSIGN(std::string text, read_file(path));
  return parse_status_named(text, path);
}

}  // namespace crkit::proc
