/* blcr_common.h - version numbers and the checkpoint signal (BLCR-compatible values). */
#ifndef _BLCR_COMMON_H
#define _BLCR_COMMON_H 1

/* The signal that carries checkpoint requests: SIGRTMAX on glibc x86-64. */
#define CR_SIGNUM 64

/* The BLCR release this library is compatible with (0.8.6_b4). CR_RELEASE_PATCH is a bare
 * token, as in BLCR. */
#define CR_RELEASE_MAJOR 0
#define CR_RELEASE_MINOR 8
#define CR_RELEASE_PATCH 6_b4
#define CR_RELEASE_VERSION "0.8.6_b4"

/* The libcr interface version (soname libcr.so.0). */
#define LIBCR_MAJOR 0
#define LIBCR_MINOR 5
#define LIBCR_PATCH 5
#define LIBCR_VERSION "0.5.5"

/* BLCR's kernel module version; crkit needs no module, these keep dependants' checks happy. */
#define CR_MODULE_MAJOR 0
#define CR_MODULE_MINOR 10
#define CR_MODULE_PATCH 3
#define CR_MODULE_VERSION "0.10.3"

/* The crkit release that provides this BLCR-compatible interface. */
#define CRKIT_LIBCR 1

#if defined(__GNUC__) && ((__GNUC__ > 3) || (__GNUC__ == 3 && __GNUC_MINOR__ >= 2))
#define _CR_DEPRECATED __attribute__((__deprecated__))
#else
#define _CR_DEPRECATED
#endif

#include <blcr_errcodes.h>

#endif /* _BLCR_COMMON_H */
