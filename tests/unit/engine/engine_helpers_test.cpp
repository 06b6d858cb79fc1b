// Pure helpers of the engine: syscall-restart register rules, path relocation, choosing a
// free address range.
#include <gtest/gtest.h>
#include <sys/syscall.h>

#include "inject/ptrace_thread.hpp"
#include "resources/context.hpp"
#include "resources/memory.hpp"

namespace {

using namespace crkit;

inject::Regs in_syscall(long rax, long nr, uint64_t rip) {
  inject::Regs r{};
  r.rax = static_cast<unsigned long long>(rax);
  r.orig_rax = static_cast<unsigned long long>(nr);
  r.rip = rip;
  return r;
}

TEST(RegsForResume, InterruptedCallsAreReissued) {
  for (long code : {inject::kERestartSys, inject::kERestartNoIntr, inject::kERestartNoHand,
                    inject::kERestartRestartBlock}) {
    auto r = inject::regs_for_resume(in_syscall(code, SYS_nanosleep, 0x1002));
    EXPECT_EQ(r.rax, static_cast<unsigned long long>(SYS_nanosleep)) << code;
    EXPECT_EQ(r.rip, 0x1000u) << "rip must point back at the 2-byte syscall instruction";
    EXPECT_EQ(static_cast<long>(r.orig_rax), -1) << "the kernel must not restart it again";
  }
}

TEST(RegsForResume, CompletedCallsAndUserCodeAreUntouched) {
  auto done = inject::regs_for_resume(in_syscall(-4 /* EINTR */, SYS_read, 0x2002));
  EXPECT_EQ(static_cast<long>(done.rax), -4);
  EXPECT_EQ(done.rip, 0x2002u);
  auto user = inject::regs_for_resume(in_syscall(42, -1, 0x3000));
  EXPECT_EQ(user.rax, 42u);
  EXPECT_EQ(user.rip, 0x3000u);
}

TEST(Relocate, WholeLeadingComponentsOnly) {
  resources::RestoreTarget t;
  t.relocations = {{"/old", "/new"}, {"/old/deeper", "/never"}, {"/", "/root-prefix"}};
  EXPECT_EQ(t.relocate("/old"), "/new");
  EXPECT_EQ(t.relocate("/old/a/b"), "/new/a/b");
  EXPECT_EQ(t.relocate("/old/deeper/x"), "/new/deeper/x") << "first match wins";
  EXPECT_EQ(t.relocate("/older/x"), "/root-prefix/older/x") << "not a whole component of /old";
  resources::RestoreTarget to_root;
  to_root.relocations = {{"/jail", "/"}};
  EXPECT_EQ(to_root.relocate("/jail/etc/x"), "/etc/x");
  resources::RestoreTarget none;
  EXPECT_EQ(none.relocate("/a/b"), "/a/b");
}

TEST(FreeRange, AvoidsBothLayouts) {
  std::vector<image::VmaRecord> saved(1);
  saved[0].start = 0x100000000ull;
  saved[0].end = 0x100100000ull;
  std::vector<proc::MapEntry> cur(1);
  cur[0].start = 0x140000000ull;
  cur[0].end = 0x140001000ull;
  auto r = resources::find_free_range(saved, cur, 0x10000);
  ASSERT_TRUE(r.ok());
  for (auto [s, e] : {std::pair{saved[0].start, saved[0].end}, std::pair{cur[0].start, cur[0].end}})
    EXPECT_TRUE(*r + 0x10000 <= s || *r >= e) << std::hex << *r;
}

}  // namespace
