// cr_strerror(): strerror() that also knows BLCR's CR_E* codes.
#include <string.h>

#include "libcr/core.hpp"

extern "C" CR_EXPORT const char* cr_strerror(int errnum) {
  switch (errnum) {
#define CR_ERROR_DEF(name, desc) \
  case name:                     \
    return desc;
#include "blcr_errcodes.h"
#undef CR_ERROR_DEF
    default:
      return strerror(errnum);
  }
}
