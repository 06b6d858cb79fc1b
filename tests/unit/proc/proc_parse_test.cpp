// Parser tests on samples of this machine's /proc files (kernel 6.18, x86-64). Python set its
// comm to "(a) (b)", mapped "/tmp/fx dir/my file.bin" (MAP_SHARED) and "/tmp/fx dir/gone.bin"
// (then unlinked), and opened "/tmp/fx dir/app.log" O_WRONLY|O_APPEND|O_CLOEXEC and wrote 5 bytes.
#include <cerrno>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "proc/proc.hpp"

namespace crkit::proc {
namespace {

// A subset of /proc/PID/maps; "[anon:xyz]" (prctl PR_SET_VMA_ANON_NAME) is added by hand because
// this kernel lacks CONFIG_ANON_VMA_NAME. Note the trailing blank of the unnamed anonymous line.
constexpr std::string_view kMaps =
    R"(560c21f73000-560c21f74000 r--p 00000000 fe:00 18624                      /root/.pyenv/versions/3.11.7/bin/python3.11
560c21f74000-560c21f75000 r-xp 00001000 fe:00 18624                      /root/.pyenv/versions/3.11.7/bin/python3.11
560c21f77000-560c21f78000 rw-p 00003000 fe:00 18624                      /root/.pyenv/versions/3.11.7/bin/python3.11
560c30796000-560c30947000 rw-p 00000000 00:00 0                          [heap]
7f3c0ea90000-7f3c0ebc3000 rw-p 00000000 00:00 0 
7f3c0ebc7000-7f3c0ebc9000 rw-p 00000000 00:00 0                          [anon:xyz]
7f3c0ebc9000-7f3c0ebca000 rw-p 00000000 fe:00 10952751                   /tmp/fx dir/gone.bin (deleted)
7f3c0ebca000-7f3c0ebcc000 rw-s 00000000 fe:00 10952750                   /tmp/fx dir/my file.bin
7f3c0f01e000-7f3c0f044000 r--p 00000000 fe:00 332835                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f3c0f044000-7f3c0f19a000 r-xp 00026000 fe:00 332835                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f3c0f19a000-7f3c0f1ed000 r--p 0017c000 fe:00 332835                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f3c0f8dd000-7f3c0f8e1000 r--p 00000000 00:00 0                          [vvar]
7f3c0f8e1000-7f3c0f8e3000 r--p 00000000 00:00 0                          [vvar_vclock]
7f3c0f8e3000-7f3c0f8e5000 r-xp 00000000 00:00 0                          [vdso]
7ffed123a000-7ffed125b000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
)";

// Five complete /proc/PID/smaps entries.
constexpr std::string_view kSmaps =
    R"(7f3c0ebc9000-7f3c0ebca000 rw-p 00000000 fe:00 10952751                   /tmp/fx dir/gone.bin (deleted)
Size:                  4 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   0 kB
Pss:                   0 kB
Pss_Dirty:             0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:            0 kB
Anonymous:             0 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
ProtectionKey:         0
VmFlags: rd wr mr mw me ac 
7f3c0ebca000-7f3c0ebcc000 rw-s 00000000 fe:00 10952750                   /tmp/fx dir/my file.bin
Size:                  8 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   0 kB
Pss:                   0 kB
Pss_Dirty:             0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:            0 kB
Anonymous:             0 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
ProtectionKey:         0
VmFlags: rd wr sh mr mw me ms 
7f3c0f8e1000-7f3c0f8e3000 r--p 00000000 00:00 0                          [vvar_vclock]
Size:                  8 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   0 kB
Pss:                   0 kB
Pss_Dirty:             0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:            0 kB
Anonymous:             0 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
ProtectionKey:         0
VmFlags: rd mr pf io de dd 
7ffed123a000-7ffed125b000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                  64 kB
Pss:                  64 kB
Pss_Dirty:            64 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:        64 kB
Referenced:           64 kB
Anonymous:            64 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
ProtectionKey:         0
VmFlags: rd wr mr mw me gd ac 
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
Size:                  4 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   0 kB
Pss:                   0 kB
Pss_Dirty:             0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:            0 kB
Anonymous:             0 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
ProtectionKey:         0
VmFlags: ex 
)";

constexpr std::string_view kStat =
    R"(3898 ((a) (b)) R 3894 3894 2291 0 -1 4194304 2979 6538 21 2 4 2 2 3 20 0 1 0 74712 17522688 3565 18446744073709551615 94610109448192 94610109448533 140732407321888 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0 94610109459888 94610109460504 94610352857088 140732407326881 140732407326933 140732407326933 140732407328719 0
)";

// /proc/PID/status with groups, a nested pid namespace, a tracer, blocked signals, umask 027,
// no_new_privs and seccomp filter mode filled in.
constexpr std::string_view kStatus = R"(Name:	(a) (b)
Umask:	0027
State:	R (running)
Tgid:	3898
Ngid:	0
Pid:	3898
PPid:	3894
TracerPid:	3001
Uid:	0	0	0	0
Gid:	0	0	0	0
FDSize:	256
Groups:	4 24 27 1000 
NStgid:	3898	1
NSpid:	3898	1
NSpgid:	3894	0
NSsid:	2291	0
Kthread:	0
VmPeak:	   17112 kB
VmSize:	   17112 kB
VmLck:	       0 kB
VmPin:	       0 kB
VmHWM:	   14352 kB
VmRSS:	   14352 kB
RssAnon:	    7400 kB
RssFile:	    6952 kB
RssShmem:	       0 kB
VmData:	    8292 kB
VmStk:	     132 kB
VmExe:	       4 kB
VmLib:	    4772 kB
VmPTE:	      72 kB
VmSwap:	       0 kB
HugetlbPages:	       0 kB
CoreDumping:	0
THP_enabled:	1
untag_mask:	0xffffffffffffffff
Threads:	1
SigQ:	0/96365
SigPnd:	0000000000000000
ShdPnd:	0000000000000000
SigBlk:	fffffffe7ffbfeff
SigIgn:	0000000001001000
SigCgt:	0000000000000002
CapInh:	0000000000000000
CapPrm:	000001fffeffffff
CapEff:	000001fffeffffff
CapBnd:	000001fffeffffff
CapAmb:	0000000000000000
NoNewPrivs:	1
Seccomp:	2
Seccomp_filters:	0
Speculation_Store_Bypass:	thread vulnerable
SpeculationIndirectBranch:	conditional enabled
Cpus_allowed:	3
Cpus_allowed_list:	0-1
Mems_allowed:	00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000001
Mems_allowed_list:	0
voluntary_ctxt_switches:	115
nonvoluntary_ctxt_switches:	4
)";

constexpr std::string_view kFdinfo = R"(pos:	5
flags:	02102001
mnt_id:	27
ino:	10952752
)";

TEST(ParseMaps, RealSample) {
  auto r = parse_maps(kMaps);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto& m = *r;
  ASSERT_EQ(m.size(), 16u);

  EXPECT_EQ(m[0].start, 0x560c21f73000u);
  EXPECT_EQ(m[0].end, 0x560c21f74000u);
  EXPECT_TRUE(m[0].read);
  EXPECT_FALSE(m[0].write);
  EXPECT_FALSE(m[0].exec);
  EXPECT_FALSE(m[0].shared);
  EXPECT_EQ(m[0].offset, 0u);
  EXPECT_EQ(m[0].dev_major, 0xfeu);
  EXPECT_EQ(m[0].dev_minor, 0u);
  EXPECT_EQ(m[0].inode, 18624u);
  EXPECT_EQ(m[0].path, "/root/.pyenv/versions/3.11.7/bin/python3.11");
  EXPECT_FALSE(m[0].deleted);
  EXPECT_TRUE(m[0].vm_flags.empty());

  EXPECT_TRUE(m[1].exec);
  EXPECT_EQ(m[1].offset, 0x1000u);
  EXPECT_TRUE(m[2].write);
  EXPECT_EQ(m[3].path, "[heap]");

  // Unnamed anonymous mapping: "... 0 " then end of line.
  EXPECT_EQ(m[4].path, "");
  EXPECT_EQ(m[4].inode, 0u);
  EXPECT_EQ(m[4].dev_major, 0u);
  EXPECT_FALSE(m[4].deleted);

  EXPECT_EQ(m[5].path, "[anon:xyz]");

  EXPECT_EQ(m[6].path, "/tmp/fx dir/gone.bin");
  EXPECT_TRUE(m[6].deleted);
  EXPECT_EQ(m[6].inode, 10952751u);

  EXPECT_EQ(m[7].path, "/tmp/fx dir/my file.bin");
  EXPECT_FALSE(m[7].deleted);
  EXPECT_TRUE(m[7].shared);
  EXPECT_TRUE(m[7].write);

  EXPECT_EQ(m[10].offset, 0x17c000u);
  EXPECT_EQ(m[11].path, "[vvar]");
  EXPECT_EQ(m[12].path, "[vvar_vclock]");
  EXPECT_EQ(m[13].path, "[vdso]");
  EXPECT_TRUE(m[13].exec);
  EXPECT_EQ(m[14].path, "[stack]");
  EXPECT_EQ(m[15].path, "[vsyscall]");
  EXPECT_EQ(m[15].start, 0xffffffffff600000u);
  EXPECT_FALSE(m[15].read);
  EXPECT_TRUE(m[15].exec);
}

TEST(ParseMaps, SpacesAndDeletedEdgeCases) {
  auto r = parse_maps(
      "7f0000000000-7f0000001000 r--p 00000000 08:01 42      /a b/c  d (deleted)\n"
      "7f0000001000-7f0000002000 rw-s 00000000 00:01 1043    /memfd:name with spaces (deleted)\n"
      "7f0000002000-7f0000003000 r--p 00000000 103:0a 7     /x (deleted) y\n"
      "7f0000003000-7f0000004000 r--p 00000000 00:00 0");  // no trailing newline or blank
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ((*r)[0].path, "/a b/c  d");
  EXPECT_TRUE((*r)[0].deleted);
  EXPECT_EQ((*r)[0].dev_major, 8u);
  EXPECT_EQ((*r)[0].dev_minor, 1u);
  EXPECT_EQ((*r)[1].path, "/memfd:name with spaces");
  EXPECT_TRUE((*r)[1].deleted);
  EXPECT_EQ((*r)[2].path, "/x (deleted) y");  // only a trailing " (deleted)" counts
  EXPECT_FALSE((*r)[2].deleted);
  EXPECT_EQ((*r)[2].dev_major, 0x103u);
  EXPECT_EQ((*r)[2].dev_minor, 0xau);
  EXPECT_EQ((*r)[3].path, "");
}

TEST(ParseMaps, EmptyInput) {
  auto r = parse_maps("");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

TEST(ParseMaps, MalformedIsEinvalNamingLine) {
  const char* bad[] = {
      "7f0000000000 r--p 00000000 08:01 42 /x\n",                // no range dash
      "7f000000000g-7f0000001000 r--p 00000000 08:01 42 /x\n",   // bad hex
      "7f0000001000-7f0000000000 r--p 00000000 08:01 42 /x\n",   // end < start
      "7f0000000000-7f0000001000 r--q 00000000 08:01 42 /x\n",   // bad perms
      "7f0000000000-7f0000001000 rw 00000000 08:01 42 /x\n",     // short perms
      "7f0000000000-7f0000001000 r--p 0000z000 08:01 42 /x\n",   // bad offset
      "7f0000000000-7f0000001000 r--p 00000000 0801 42 /x\n",    // bad device
      "7f0000000000-7f0000001000 r--p 00000000 08:01 4x2 /x\n",  // bad inode
      "7f0000000000-7f0000001000 r--p 00000000 08:01\n",         // truncated
      "garbage\n",
  };
  for (const char* b : bad) {
    std::string text = std::string(kMaps.substr(0, kMaps.find('\n') + 1)) + b;
    auto r = parse_maps(text);
    ASSERT_FALSE(r.ok()) << b;
    EXPECT_EQ(r.error().code, EINVAL) << b;
    EXPECT_NE(r.error().message.find("maps line 2"), std::string::npos) << r.error().message;
  }
}

TEST(ParseSmaps, RealSample) {
  auto r = parse_smaps(kSmaps);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto& m = *r;
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0].path, "/tmp/fx dir/gone.bin");
  EXPECT_TRUE(m[0].deleted);
  EXPECT_EQ(m[0].vm_flags, (std::vector<std::string>{"rd", "wr", "mr", "mw", "me", "ac"}));
  EXPECT_EQ(m[1].path, "/tmp/fx dir/my file.bin");
  EXPECT_TRUE(m[1].shared);
  EXPECT_TRUE(m[1].has_flag("sh"));
  EXPECT_TRUE(m[1].has_flag("ms"));
  EXPECT_EQ(m[2].path, "[vvar_vclock]");
  EXPECT_TRUE(m[2].has_flag("pf"));
  EXPECT_TRUE(m[2].has_flag("io"));
  EXPECT_TRUE(m[2].has_flag("dd"));
  EXPECT_FALSE(m[2].has_flag("wr"));
  EXPECT_FALSE(m[2].has_flag("d"));
  EXPECT_EQ(m[3].path, "[stack]");
  EXPECT_TRUE(m[3].has_flag("gd"));
  EXPECT_EQ(m[4].path, "[vsyscall]");
  EXPECT_EQ(m[4].vm_flags, (std::vector<std::string>{"ex"}));
}

TEST(ParseSmaps, AgreesWithMapsOnHeaderLines) {
  auto s = parse_smaps(kSmaps);
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::string headers;
  for (auto line : detail::split_lines(kSmaps)) {
    if (line.find(':') == std::string_view::npos || line.find('-') < line.find(':')) {
      headers += std::string(line) + "\n";
    }
  }
  auto m = parse_maps(headers);
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_EQ(m->size(), s->size());
  for (size_t i = 0; i < m->size(); ++i) {
    EXPECT_EQ((*m)[i].start, (*s)[i].start);
    EXPECT_EQ((*m)[i].path, (*s)[i].path);
  }
}

TEST(ParseSmaps, Malformed) {
  auto r = parse_smaps("Size:                  4 kB\n");  // key line before any mapping
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_NE(r.error().message.find("smaps line 1"), std::string::npos) << r.error().message;

  std::string text = std::string(kSmaps) + "not a mapping line\n";
  r = parse_smaps(text);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_NE(r.error().message.find("line 131"), std::string::npos) << r.error().message;
}

TEST(ParseStat, RealSampleWithParenthesesInComm) {
  auto r = parse_stat(kStat);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const Stat& s = *r;
  EXPECT_EQ(s.pid, 3898);
  EXPECT_EQ(s.comm, "(a) (b)");
  EXPECT_EQ(s.state, 'R');
  EXPECT_EQ(s.ppid, 3894);
  EXPECT_EQ(s.pgrp, 3894);
  EXPECT_EQ(s.session, 2291);
  EXPECT_EQ(s.tty_nr, 0);
  EXPECT_EQ(s.flags, 4194304u);
  EXPECT_EQ(s.num_threads, 1);
  EXPECT_EQ(s.start_time, 74712u);
  EXPECT_EQ(s.start_code, 94610109448192u);
  EXPECT_EQ(s.end_code, 94610109448533u);
  EXPECT_EQ(s.start_stack, 140732407321888u);
  EXPECT_EQ(s.exit_signal, 17);
  EXPECT_EQ(s.start_data, 94610109459888u);
  EXPECT_EQ(s.end_data, 94610109460504u);
  EXPECT_EQ(s.start_brk, 94610352857088u);
  EXPECT_EQ(s.arg_start, 140732407326881u);
  EXPECT_EQ(s.arg_end, 140732407326933u);
  EXPECT_EQ(s.env_start, 140732407326933u);
  EXPECT_EQ(s.env_end, 140732407328719u);
  EXPECT_EQ(s.exit_code, 0);
}

TEST(ParseStat, TrickyComms) {
  std::string rest(kStat.substr(kStat.rfind(')') + 1));
  for (const char* comm : {"a) (b", ")", "((", "x) R 1 2 3 (", "with space", "", "new\nline"}) {
    std::string text = "42 (" + std::string(comm) + ")" + rest;
    auto r = parse_stat(text);
    ASSERT_TRUE(r.ok()) << comm << ": " << r.error().message;
    EXPECT_EQ(r->pid, 42);
    EXPECT_EQ(r->comm, comm);
    EXPECT_EQ(r->state, 'R');
    EXPECT_EQ(r->ppid, 3894);
  }
}

TEST(ParseStat, UnprivilegedReaderZeros) {
  // What a reader without ptrace access sees: code/stack/data/arg/env addresses masked.
  auto r = parse_stat(
      "1 (systemd) S 0 1 1 0 -1 4194560 52064 3066737 106 1551 188 121 9043 2871 20 0 1 0 11 "
      "22736896 3236 18446744073709551615 1 1 0 0 0 0 671173123 4096 1260 0 0 0 17 1 0 0 0 0 0 "
      "0 0 0 0 0 0 0 0\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->comm, "systemd");
  EXPECT_EQ(r->state, 'S');
  EXPECT_EQ(r->ppid, 0);
  EXPECT_EQ(r->tty_nr, 0);
  EXPECT_EQ(r->start_code, 1u);
  EXPECT_EQ(r->start_stack, 0u);
  EXPECT_EQ(r->env_end, 0u);
}

TEST(ParseStat, NegativeAndTtyFields) {
  std::string text(kStat);
  // tty_nr 34816 (/dev/pts/0), exit_code 256 (exit status 1).
  text.replace(text.find(" 2291 0 -1 "), 11, " 2291 34816 -1 ");
  text.replace(text.rfind(" 0"), 2, " 256");
  auto r = parse_stat(text);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->tty_nr, 34816);
  EXPECT_EQ(r->exit_code, 256);
}

TEST(ParseStat, MalformedIsEinval) {
  std::string rest(kStat.substr(kStat.rfind(')') + 1));
  std::string truncated(kStat.substr(0, kStat.find(" 18446744073709551615")));
  std::string bad_ppid = "42 (x) R x3894" + rest.substr(rest.find(' ', 3));
  const std::string cases[] = {
      "",
      "3898 cat R 1 2 3",
      "3898 (cat R 1 2 3",
      "x (cat)" + rest,
      "3898 (cat) RR" + rest.substr(2),
      truncated,
      bad_ppid,
  };
  for (const auto& c : cases) {
    auto r = parse_stat(c);
    ASSERT_FALSE(r.ok()) << c;
    EXPECT_EQ(r.error().code, EINVAL) << c;
    EXPECT_NE(r.error().message.find("parsing stat"), std::string::npos) << r.error().message;
  }
}

TEST(ParseStatus, RealSample) {
  auto r = parse_status(kStatus);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const Status& s = *r;
  EXPECT_EQ(s.name, "(a) (b)");
  EXPECT_EQ(s.state, 'R');
  EXPECT_EQ(s.tgid, 3898);
  EXPECT_EQ(s.pid, 3898);
  EXPECT_EQ(s.ppid, 3894);
  EXPECT_EQ(s.tracer_pid, 3001);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(s.uid[i], 0u);
    EXPECT_EQ(s.gid[i], 0u);
  }
  EXPECT_EQ(s.groups, (std::vector<uint32_t>{4, 24, 27, 1000}));
  EXPECT_EQ(s.umask, 027u);
  EXPECT_EQ(s.nstgid, (std::vector<pid_t>{3898, 1}));
  EXPECT_EQ(s.nspid, (std::vector<pid_t>{3898, 1}));
  EXPECT_EQ(s.nspgid, (std::vector<pid_t>{3894, 0}));
  EXPECT_EQ(s.nssid, (std::vector<pid_t>{2291, 0}));
  EXPECT_EQ(s.threads, 1);
  EXPECT_EQ(s.sig_pnd, 0u);
  EXPECT_EQ(s.shd_pnd, 0u);
  EXPECT_EQ(s.sig_blk, 0xfffffffe7ffbfeffu);
  EXPECT_EQ(s.sig_ign, 0x1001000u);
  EXPECT_EQ(s.sig_cgt, 0x2u);
  EXPECT_EQ(s.cap_inh, 0u);
  EXPECT_EQ(s.cap_prm, 0x1fffeffffffu);
  EXPECT_EQ(s.cap_eff, 0x1fffeffffffu);
  EXPECT_EQ(s.cap_bnd, 0x1fffeffffffu);
  EXPECT_EQ(s.cap_amb, 0u);
  EXPECT_EQ(s.no_new_privs, 1);
  EXPECT_EQ(s.seccomp, 2);
}

TEST(ParseStatus, UidsEmptyGroupsAndEscapedName) {
  std::string text(kStatus);
  text.replace(text.find("Name:\t(a) (b)"), 13, "Name:\t a\\\\b\\nc ");
  text.replace(text.find("Uid:\t0\t0\t0\t0"), 12, "Uid:\t1000\t1001\t1002\t1003");
  text.replace(text.find("Gid:\t0\t0\t0\t0"), 12, "Gid:\t100\t101\t102\t103");
  text.replace(text.find("Groups:\t4 24 27 1000 "), 21, "Groups:\t ");
  auto r = parse_status(text);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->name, " a\\b\nc ");
  EXPECT_EQ(r->uid[0], 1000u);
  EXPECT_EQ(r->uid[3], 1003u);
  EXPECT_EQ(r->gid[1], 101u);
  EXPECT_EQ(r->gid[2], 102u);
  EXPECT_TRUE(r->groups.empty());
}

TEST(ParseStatus, MalformedIsEinval) {
  auto replace = [](std::string from, std::string to) {
    std::string t(kStatus);
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  const std::string cases[] = {
      "",
      replace("Pid:\t3898\n", ""),           // missing Pid
      replace("Pid:\t3898", "Pid:\t38x98"),  // bad number
      replace("Uid:\t0\t0\t0\t0", "Uid:\t0\t0\t0"),
      replace("Groups:\t4 24", "Groups:\t4 -24"),
      replace("Umask:\t0027", "Umask:\t0029"),
      replace("SigBlk:\tfffffffe7ffbfeff", "SigBlk:\tfffffffe7ffbfeffff"),  // > 64 bits
      replace("NSpid:\t3898\t1", "NSpid:\t3898\tx"),
      replace("Kthread:\t0", "Kthread 0"),  // no colon
      replace("State:\tR (running)", "State:\t"),
  };
  for (const auto& c : cases) {
    auto r = parse_status(c);
    ASSERT_FALSE(r.ok()) << c;
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_NE(r.error().message.find("parsing status"), std::string::npos) << r.error().message;
  }
  auto r = parse_status(replace("Pid:\t3898", "Pid:\t38x98"));
  EXPECT_NE(r.error().message.find("line 6"), std::string::npos) << r.error().message;
}

TEST(ParseFdinfo, RealSample) {
  auto r = parse_fdinfo(kFdinfo);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->pos, 5u);
  EXPECT_EQ(r->flags, 02102001u);  // O_CLOEXEC | O_LARGEFILE | O_APPEND | O_WRONLY
  EXPECT_EQ(r->mnt_id, 27);
  EXPECT_EQ(r->ino, 10952752u);
}

TEST(ParseFdinfo, OlderKernelAndExtraLines) {
  // No "ino:" (before 5.14); eventfd and lock lines are ignored.
  auto r = parse_fdinfo(
      "pos:\t0\nflags:\t02004002\nmnt_id:\t15\neventfd-count:  0\neventfd-id: 3\n"
      "lock:\t1: POSIX  ADVISORY  WRITE 1234 08:01:42 0 EOF\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->pos, 0u);
  EXPECT_EQ(r->flags, 02004002u);
  EXPECT_EQ(r->mnt_id, 15);
  EXPECT_EQ(r->ino, 0u);

  // inotify lines contain "ino:" after another key and must not be taken for the ino line.
  r = parse_fdinfo(
      "pos:\t0\nflags:\t02000000\nmnt_id:\t16\nino:\t1057\n"
      "inotify wd:1 ino:2 sdev:800001 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 "
      "f_handle:0200000000000000\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->ino, 1057u);
}

TEST(ParseFdinfo, MalformedIsEinval) {
  const char* cases[] = {
      "",
      "pos:\t0\nmnt_id:\t27\n",                   // no flags
      "pos:\t0\nflags:\t0100008\nmnt_id:\t27\n",  // not octal
      "pos:\t-1\nflags:\t0100000\nmnt_id:\t27\n",
      "pos:\t0\nflags:\t0100000\nmnt_id:\tx\n",
  };
  for (const char* c : cases) {
    auto r = parse_fdinfo(c);
    ASSERT_FALSE(r.ok()) << c;
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_NE(r.error().message.find("parsing fdinfo"), std::string::npos) << r.error().message;
  }
}

std::string words(std::initializer_list<uint64_t> w) {
  std::string s(w.size() * 8, '\0');
  size_t i = 0;
  for (uint64_t v : w) std::memcpy(s.data() + 8 * i++, &v, 8);
  return s;
}

TEST(ParseAuxv, StopsAtAtNullAndIncludesIt) {
  // AT_PAGESZ=6 4096, AT_UID=11 0, AT_NULL, then trailing words that must be ignored.
  auto r = parse_auxv(words({6, 4096, 11, 0, 0, 0, 7, 7}));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, (std::vector<uint64_t>{6, 4096, 11, 0, 0, 0}));
}

TEST(ParseAuxv, MalformedIsEinval) {
  for (const std::string& b :
       {std::string(), words({6, 4096}), words({6, 4096, 0}), std::string(20, '\1')}) {
    auto r = parse_auxv(b);
    ASSERT_FALSE(r.ok()) << b.size();
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_NE(r.error().message.find("auxv"), std::string::npos);
  }
}

}  // namespace
}  // namespace crkit::proc
