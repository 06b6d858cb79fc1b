// libcr_run.so and libcr_omit.so (built from this file with CRKIT_STUB_OMIT 0 or 1): they only
// mark the process for checkpoint requesters. A libcr_run process is dumped as it is (crkit
// needs nothing from inside it); a libcr_omit process is always left out. Neither installs a
// signal handler: a program run under cr_run keeps CR_SIGNUM to itself. When the full libcr is
// in the process too, it wins and takes the block over (cri_stub_release).
#include <dlfcn.h>
#include <pthread.h>
#include <sys/mman.h>

#include "libcr/core.hpp"

using namespace crkit::libcr;

extern "C" {

#if CRKIT_STUB_OMIT
CR_EXPORT int cr_omit_link_me = 0;
#else
CR_EXPORT int cr_run_link_me = 0;
#endif
extern const int cri_signum;
const int cri_signum = kSignal;

// Called by the full libcr's constructor: it makes its own block.
CR_EXPORT int cri_stub_release() {
  if (g.cb) {
    ::munmap(g.cb, sizeof(ControlBlock));
    ::close(g.cb_fd);
    g.cb = nullptr;
    g.cb_fd = -1;
  }
  return 0;
}

static void stub_atfork_child() {
  if (g.cb) make_control_block(g.kind);
}

__attribute__((constructor)) static void cri_stub_init() {
  g.cb_fd = -1;
  if (dlsym(RTLD_DEFAULT, "cri_full_library")) return;  // the full library is here already
  if (make_control_block(CRKIT_STUB_OMIT ? kKindOmit : kKindRun))
    pthread_atfork(nullptr, nullptr, stub_atfork_child);
}

}  // extern "C"
