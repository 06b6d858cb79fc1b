// CR_SIGNUM belongs to libcr, but an application may install its own disposition for it (or
// pass a struct sigaction with a bogus sa_restorer). The signal functions are interposed: for
// CR_SIGNUM the application's disposition is kept here and read back exactly as it was set,
// while the kernel keeps libcr's handler; libcr hands the application any CR_SIGNUM that is
// not a checkpoint request. Blocking CR_SIGNUM is ignored, as glibc does for its own signals.
#include <dlfcn.h>
#include <errno.h>
#include <string.h>

#include "libcr/core.hpp"

namespace crkit::libcr {
namespace {

using SigactionFn = int (*)(int, const struct sigaction*, struct sigaction*);
using SigmaskFn = int (*)(int, const sigset_t*, sigset_t*);

// RTLD_NEXT searches only the objects loaded after libcr. When libcr comes in as a dependency
// of another library (app -> libmpich.so.12 -> libcr.so.0), libc precedes it and RTLD_NEXT
// finds nothing: then ask libc itself (already loaded, so RTLD_NOLOAD).
template <typename Fn>
Fn next(const char* name) {
  if (void* f = dlsym(RTLD_NEXT, name)) return reinterpret_cast<Fn>(f);
  void* libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
  return libc ? reinterpret_cast<Fn>(dlsym(libc, name)) : nullptr;
}

int virtual_sigaction(const struct sigaction* act, struct sigaction* old) {
  struct sigaction prev = g.app_action;
  if (!g.app_action_set) {
    memset(&prev, 0, sizeof prev);
    prev.sa_handler = SIG_DFL;
  }
  if (act) {
    g.app_action = *act;
    g.app_action_set = true;
  }
  if (old) *old = prev;
  return 0;
}

sigset_t without_signum(const sigset_t* set) {
  sigset_t s = *set;
  sigdelset(&s, kSignal);
  return s;
}

}  // namespace

int real_sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
  static SigactionFn fn = next<SigactionFn>("sigaction");
  return fn(sig, act, old);
}

int real_sigprocmask(int how, const sigset_t* set, sigset_t* old) {
  static SigmaskFn fn = next<SigmaskFn>("sigprocmask");
  return fn(how, set, old);
}

}  // namespace crkit::libcr

using namespace crkit::libcr;

extern "C" {

CR_EXPORT int sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
  if (sig == kSignal && g.ready) return virtual_sigaction(act, old);
  return real_sigaction(sig, act, old);
}

CR_EXPORT int __sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
  return sigaction(sig, act, old);
}

static sighandler_t set_handler(int sig, sighandler_t h, int flags) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = h;
  sa.sa_flags = flags;
  sigemptyset(&sa.sa_mask);
  if (flags & SA_NODEFER) {
  } else {
    sigaddset(&sa.sa_mask, sig);
  }
  if (sigaction(sig, &sa, &old) < 0) return SIG_ERR;
  return old.sa_handler;
}

CR_EXPORT sighandler_t signal(int sig, sighandler_t h) {
  return set_handler(sig, h, SA_RESTART);
}
CR_EXPORT sighandler_t bsd_signal(int sig, sighandler_t h) {
  return set_handler(sig, h, SA_RESTART);
}
CR_EXPORT sighandler_t sysv_signal(int sig, sighandler_t h) {
  return set_handler(sig, h, SA_RESETHAND | SA_NODEFER);
}

CR_EXPORT int sigprocmask(int how, const sigset_t* set, sigset_t* old) {
  if (set && how != SIG_UNBLOCK && g.ready) {
    sigset_t s = without_signum(set);
    return real_sigprocmask(how, &s, old);
  }
  return real_sigprocmask(how, set, old);
}

CR_EXPORT int pthread_sigmask(int how, const sigset_t* set, sigset_t* old) {
  static SigmaskFn fn = next<SigmaskFn>("pthread_sigmask");
  int r;
  if (set && how != SIG_UNBLOCK && g.ready) {
    sigset_t s = without_signum(set);
    r = fn(how, &s, old);
  } else {
    r = fn(how, set, old);
  }
  return r;
}

}  // extern "C"
