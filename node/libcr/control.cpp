// The control block (control_block.h): created when a libcr library is loaded, again in every
// fork child (a child must not share its parent's), and the list of libcr's own descriptors in
// it that a checkpoint leaves out.
#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>

#include "libcr/core.hpp"

namespace crkit::libcr {

Process g;

bool make_control_block(Kind kind) {
  int fd =
      static_cast<int>(::syscall(SYS_memfd_create, kControlName, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd < 0) return false;
  if (::ftruncate(fd, sizeof(ControlBlock)) < 0 ||
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
    ::close(fd);
    return false;
  }
  // A fork child replaces its parent's block at the same address, so that nothing that
  // points into it (futex waits) has to move.
  void* want = g.cb;
  int flags = MAP_SHARED | (want ? MAP_FIXED : 0);
  void* p = ::mmap(want, sizeof(ControlBlock), PROT_READ | PROT_WRITE, flags, fd, 0);
  if (p == MAP_FAILED) {
    ::close(fd);
    return false;
  }
  if (g.cb_fd >= 0 && g.cb) ::close(g.cb_fd);
  auto* cb = static_cast<ControlBlock*>(p);
  cb->version = kControlVersion;
  cb->kind = kind;
  cb->pid = sys_getpid();
  store(&cb->magic, kControlMagic);
  g.cb = cb;
  g.cb_fd = fd;
  g.kind = kind;
  g.pid = cb->pid;
  return true;
}

void add_private_fd(int fd) {
  ControlBlock* cb = g.cb;
  if (!cb) return;
  uint32_t n = load(&cb->n_private_fds);
  for (uint32_t i = 0; i < n; ++i)
    if (cb->private_fds[i] == fd) return;
  if (n < static_cast<uint32_t>(kMaxPrivateFds)) {
    cb->private_fds[n] = fd;
    store(&cb->n_private_fds, n + 1);
  }
}

void remove_private_fd(int fd) {
  ControlBlock* cb = g.cb;
  if (!cb) return;
  uint32_t n = load(&cb->n_private_fds);
  for (uint32_t i = 0; i < n; ++i)
    if (cb->private_fds[i] == fd) {
      cb->private_fds[i] = cb->private_fds[n - 1];
      store(&cb->n_private_fds, n - 1);
      return;
    }
}

}  // namespace crkit::libcr
