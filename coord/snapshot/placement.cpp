// Host lists and the rank-to-node plans of launch and restart.
#include "snapshot/placement.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdint>
#include <map>
#include <set>
#include <utility>

#include <fmt/format.h>

namespace crkit::coord {

namespace {

constexpr int kMaxSlots = 1 << 20;  // more is a typo
constexpr size_t kHostsShown = 10;  // hosts listed in an error

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n\v\f";
  auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

std::vector<std::string_view> split_ws(std::string_view s) {
  std::vector<std::string_view> out;
  const char* ws = " \t\r\n\v\f";
  size_t i = 0;
  while ((i = s.find_first_not_of(ws, i)) != std::string_view::npos) {
    size_t e = s.find_first_of(ws, i);
    if (e == std::string_view::npos) e = s.size();
    out.push_back(s.substr(i, e - i));
    i = e;
  }
  return out;
}

// Why `host` is not a host name, or "".
std::string bad_host(std::string_view host) {
  if (host.empty()) return "empty host name";
  for (char c : host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_';
    if (!ok) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
        return fmt::format("invalid character (byte 0x{:02x}) in host name '{}'",
                           static_cast<unsigned char>(c), host);
      }
      return fmt::format("invalid character '{}' in host name '{}'", c, host);
    }
  }
  return "";
}

// A slot count: a positive decimal integer. Returns why not, or "".
std::string parse_count(std::string_view s, std::string_view what, int* out) {
  if (s.empty()) return fmt::format("{} is missing", what);
  if (!std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return fmt::format("{} '{}' is not a positive integer", what, s);
  }
  int v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v > kMaxSlots) {
    return fmt::format("{} '{}' is too large (at most {})", what, s, kMaxSlots);
  }
  if (v == 0) return fmt::format("{} must be at least 1", what);
  *out = v;
  return "";
}

// "host" or "host:N". Returns why not, or "".
std::string parse_host_colon(std::string_view token, HostSlot* out) {
  std::string_view host = token, count;
  bool has_count = false;
  if (auto colon = token.find(':'); colon != std::string_view::npos) {
    host = token.substr(0, colon);
    count = token.substr(colon + 1);
    has_count = true;
    if (count.find(':') != std::string_view::npos) {
      return fmt::format(
          "'{}': more than one ':' (IPv6 addresses are not supported, use a host "
          "name)",
          token);
    }
  }
  if (std::string why = bad_host(host); !why.empty()) return why;
  out->host = std::string(host);
  out->slots = 0;
  if (has_count) {
    if (std::string why = parse_count(count, fmt::format("slot count of '{}'", host), &out->slots);
        !why.empty()) {
      return why;
    }
  }
  return "";
}

// Adds h to hosts, merging a host seen before into its first entry.
void merge_host(std::vector<HostSlot>& hosts, std::map<std::string, size_t>& index, HostSlot h) {
  auto [it, fresh] = index.emplace(h.host, hosts.size());
  if (fresh) {
    hosts.push_back(std::move(h));
    return;
  }
  HostSlot& first = hosts[it->second];
  const int64_t sum = int64_t{first.slots ? first.slots : 1} + (h.slots ? h.slots : 1);
  first.slots = static_cast<int>(std::min<int64_t>(sum, kMaxSlots));
}

std::string plural(int64_t n, std::string_view one, std::string_view many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

std::string describe_slots(const HostSlot& h) {
  if (h.slots <= 0) return fmt::format("{}: slots unspecified", h.host);
  return fmt::format("{}: {}", h.host, plural(h.slots, "slot", "slots"));
}

// "a: 2 slots, b: slots unspecified, ... (12 more)"
std::string describe_hosts(const std::vector<HostSlot>& hosts) {
  std::string s;
  for (size_t i = 0; i < hosts.size() && i < kHostsShown; ++i) {
    if (i) s += ", ";
    s += describe_slots(hosts[i]);
  }
  if (hosts.size() > kHostsShown) s += fmt::format(", ... ({} more)", hosts.size() - kHostsShown);
  return s;
}

Status check_hosts(const std::vector<HostSlot>& hosts) {
  std::set<std::string> seen;
  for (const auto& h : hosts) {
    if (std::string why = bad_host(h.host); !why.empty()) return fail(EINVAL, why);
    if (h.slots < 0) {
      return fail(EINVAL, fmt::format("host {}: slot count {} is negative", h.host, h.slots));
    }
    if (!seen.insert(h.host).second) {
      return fail(EINVAL, fmt::format("host {} is listed twice (a host takes one node image "
                                      "only)",
                                      h.host));
    }
  }
  return {};
}

// Whether images of rank counts `needs` fit onto hosts of capacities `caps` one to one
// (capacity >= need): the k-th largest need must fit the k-th largest capacity.
bool fits(std::vector<int> needs, std::vector<int> caps) {
  if (needs.size() > caps.size()) return false;
  std::sort(needs.begin(), needs.end(), std::greater<>());
  std::sort(caps.begin(), caps.end(), std::greater<>());
  for (size_t k = 0; k < needs.size(); ++k) {
    if (caps[k] < needs[k]) return false;
  }
  return true;
}

int capacity(const HostSlot& h) {
  return h.slots > 0 ? h.slots : INT_MAX;
}

// The error of a restart that does not fit.
Error restart_misfit(const Manifest& m, const std::vector<HostSlot>& hosts) {
  std::map<int, int, std::greater<>> by_size;  // rank count -> images, largest first
  for (const auto& e : m.images) ++by_size[static_cast<int>(e.ranks.size())];
  const int nimages = static_cast<int>(m.images.size());
  std::string have;
  std::string need;
  if (by_size.size() == 1) {
    const auto& [size, count] = *by_size.begin();
    have = fmt::format("{} of {}{}", plural(count, "node image", "node images"),
                       plural(size, "rank", "ranks"), count > 1 ? " each" : "");
    need = fmt::format("{} with at least {}{}", plural(count, "host", "hosts"),
                       plural(size, "slot", "slots"), count > 1 ? " each" : "");
  } else {
    std::string parts, needs;
    bool first = true;
    for (const auto& [size, count] : by_size) {
      parts += fmt::format("{}{} of {}", first ? "" : ", ", count, plural(size, "rank", "ranks"));
      needs += fmt::format("{}{}{} with at least {}", first ? "" : ", ", count,
                           first ? "" : " more", plural(size, "slot", "slots"));
      first = false;
    }
    have = fmt::format("{} ({})", plural(nimages, "node image", "node images"), parts);
    need = fmt::format("{}: {}", plural(nimages, "host", "hosts"), needs);
  }
  return make_error(EINVAL,
                    fmt::format("cannot restart snapshot {} of job '{}': the snapshot has {}; the "
                                "new host list has {}{}: need {}",
                                m.seq, m.job, have, plural(hosts.size(), "host", "hosts"),
                                hosts.empty() ? "" : " (" + describe_hosts(hosts) + ")", need));
}

}  // namespace

Result<std::vector<HostSlot>> parse_hostfile(std::string_view text, const std::string& name) {
  std::vector<HostSlot> hosts;
  std::map<std::string, size_t> index;
  size_t lineno = 0;
  while (!text.empty()) {
    ++lineno;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    auto tokens = split_ws(line);
    if (tokens.empty()) continue;
    auto bad = [&](const std::string& why) {
      return fail(EINVAL, fmt::format("{}:{}: {}", name, lineno, why));
    };

    HostSlot h;
    if (std::string why = parse_host_colon(tokens[0], &h); !why.empty()) return bad(why);
    const bool colon_count = h.slots > 0;
    bool slots_given = false;
    for (size_t t = 1; t < tokens.size(); ++t) {
      std::string_view tok = tokens[t];
      auto eq = tok.find('=');
      if (eq == std::string_view::npos) {
        return bad(
            fmt::format("unexpected '{}' after host {} (one host a line: 'host', "
                        "'host:N' or 'host slots=N')",
                        tok, h.host));
      }
      std::string_view key = tok.substr(0, eq), value = tok.substr(eq + 1);
      if (key == "slots") {
        if (colon_count) {
          return bad(fmt::format("host {}: both ':N' and 'slots=' give a slot count", h.host));
        }
        if (slots_given) return bad(fmt::format("host {}: 'slots=' given twice", h.host));
        if (std::string why = parse_count(value, "slots", &h.slots); !why.empty()) return bad(why);
        slots_given = true;
      } else if (key == "max_slots") {
        int max_slots = 0;
        if (std::string why = parse_count(value, "max_slots", &max_slots); !why.empty()) {
          return bad(why);
        }
      } else {
        return bad(fmt::format("unknown option '{}' for host {} (known: slots=N, max_slots=N)", key,
                               h.host));
      }
    }
    merge_host(hosts, index, std::move(h));
  }
  if (hosts.empty()) return fail(EINVAL, fmt::format("{}: no hosts listed", name));
  return hosts;
}

Result<std::vector<HostSlot>> parse_hosts_option(std::string_view csv) {
  std::vector<HostSlot> hosts;
  std::map<std::string, size_t> index;
  if (trim(csv).empty()) return fail(EINVAL, "--hosts: no hosts given");
  size_t entry = 0;
  size_t start = 0;
  for (;;) {
    ++entry;
    size_t comma = csv.find(',', start);
    std::string_view item =
        trim(csv.substr(start, comma == std::string_view::npos ? csv.npos : comma - start));
    if (item.empty()) {
      return fail(EINVAL, fmt::format("--hosts '{}': entry {} is empty", csv, entry));
    }
    HostSlot h;
    if (std::string why = parse_host_colon(item, &h); !why.empty()) {
      return fail(EINVAL, fmt::format("--hosts '{}': entry {}: {}", csv, entry, why));
    }
    merge_host(hosts, index, std::move(h));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return hosts;
}

Result<std::vector<NodePlan>> plan_launch(int nranks, const std::vector<HostSlot>& hosts, int ppn) {
  if (nranks <= 0) {
    return fail(EINVAL, fmt::format("cannot launch {} ranks: the number of ranks must be "
                                    "positive",
                                    nranks));
  }
  if (ppn < 0) {
    return fail(EINVAL, fmt::format("ranks per node {} is negative", ppn));
  }
  if (hosts.empty()) return fail(EINVAL, fmt::format("cannot launch {} ranks: no hosts", nranks));
  for (const auto& h : hosts) {
    if (std::string why = bad_host(h.host); !why.empty()) return fail(EINVAL, why);
    if (h.slots < 0) {
      return fail(EINVAL, fmt::format("host {}: slot count {} is negative", h.host, h.slots));
    }
  }

  std::vector<NodePlan> plan;
  int next = 0;
  if (ppn > 0) {
    const int64_t needed = (int64_t{nranks} + ppn - 1) / ppn;
    if (static_cast<int64_t>(hosts.size()) < needed) {
      return fail(EINVAL, fmt::format("cannot launch {} ranks at {} per node: that needs {}, the "
                                      "host list has {} ({})",
                                      nranks, ppn, plural(needed, "host", "hosts"), hosts.size(),
                                      describe_hosts(hosts)));
    }
    for (size_t i = 0; next < nranks; ++i) {
      NodePlan p{hosts[i].host, {}};
      for (int k = 0; k < ppn && next < nranks; ++k) p.ranks.push_back(next++);
      plan.push_back(std::move(p));
    }
    return plan;
  }

  int64_t total = 0;
  for (const auto& h : hosts) total += h.slots > 0 ? h.slots : 1;
  if (total < nranks) {
    return fail(EINVAL,
                fmt::format("cannot launch {} ranks: the hosts have {} in all ({}; a host without "
                            "a slot count takes 1); give more hosts or slots, or ranks per node",
                            nranks, plural(total, "slot", "slots"), describe_hosts(hosts)));
  }
  for (size_t i = 0; next < nranks; ++i) {
    const int slots = hosts[i].slots > 0 ? hosts[i].slots : 1;
    NodePlan p{hosts[i].host, {}};
    for (int k = 0; k < slots && next < nranks; ++k) p.ranks.push_back(next++);
    plan.push_back(std::move(p));
  }
  return plan;
}

Result<std::vector<NodePlan>> plan_restart(const Manifest& m, const std::vector<HostSlot>& hosts) {
  if (m.images.empty()) {
    return fail(EINVAL, fmt::format("cannot restart snapshot {} of job '{}': it has no images",
                                    m.seq, m.job));
  }
  if (auto st = check_hosts(hosts); !st) {
    return fail(
        st.error().context(fmt::format("cannot restart snapshot {} of job '{}'", m.seq, m.job)));
  }
  // All traffic over TCP (MPIR_CVAR_NOLOCAL): ranks share no memory, so the snapshot holds
  // one image per rank and any number of them may go onto one host, up to its slots (a host
  // without slots takes its share: the ranks divided evenly over the hosts).
  const bool per_rank = m.nolocal && std::all_of(m.images.begin(), m.images.end(),
                                                 [](const auto& e) { return e.ranks.size() == 1; });
  if (per_rank) {
    const int share =
        (m.nranks + static_cast<int>(hosts.size()) - 1) / static_cast<int>(hosts.size());
    int total = 0;
    for (const auto& h : hosts) total += h.slots > 0 ? h.slots : share;
    if (total < static_cast<int>(m.images.size()))
      return fail(EINVAL, fmt::format("cannot restart snapshot {} of job '{}': it has {} ranks; "
                                      "the new host list has {} slots on {} hosts",
                                      m.seq, m.job, m.images.size(), total, hosts.size()));
    std::vector<NodePlan> plan;
    size_t i = 0;
    for (const auto& h : hosts) {
      NodePlan n{h.host, {}};
      const int cap = h.slots > 0 ? h.slots : share;
      for (int k = 0; k < cap && i < m.images.size(); ++k)
        n.ranks.push_back(m.images[i++].ranks[0]);
      if (!n.ranks.empty()) plan.push_back(std::move(n));
    }
    return plan;
  }
  std::vector<int> needs;
  for (const auto& e : m.images) needs.push_back(static_cast<int>(e.ranks.size()));
  std::vector<int> caps;
  for (const auto& h : hosts) caps.push_back(capacity(h));
  if (!fits(needs, caps)) return fail(restart_misfit(m, hosts));

  // Image by image, the first unused host that fits and leaves the later images a fit. As the
  // whole fits, some host always qualifies; with same-size images it is simply the next one.
  std::vector<bool> used(hosts.size(), false);
  std::vector<NodePlan> plan;
  plan.reserve(m.images.size());
  for (size_t i = 0; i < m.images.size(); ++i) {
    const std::vector<int> later(needs.begin() + static_cast<std::ptrdiff_t>(i) + 1, needs.end());
    size_t chosen = hosts.size();
    for (size_t h = 0; h < hosts.size() && chosen == hosts.size(); ++h) {
      if (used[h] || caps[h] < needs[i]) continue;
      std::vector<int> rest;
      for (size_t o = 0; o < hosts.size(); ++o) {
        if (!used[o] && o != h) rest.push_back(caps[o]);
      }
      if (fits(later, std::move(rest))) chosen = h;
    }
    if (chosen == hosts.size()) return fail(restart_misfit(m, hosts));  // not reached
    used[chosen] = true;
    plan.push_back(NodePlan{hosts[chosen].host, m.images[i].ranks});
  }
  return plan;
}

}  // namespace crkit::coord
