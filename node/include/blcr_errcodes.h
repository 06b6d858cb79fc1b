/* blcr_errcodes.h - BLCR's error codes (crkit keeps their names, values and texts).
 *
 * An X-macro list: define CR_ERROR_DEF(name, desc) before including this file to expand it.
 * Without CR_ERROR_DEF it defines the enum. Values start after CR_MIN_ERRCODE (2353); the
 * low 8 bits of each are the exit code of cr_checkpoint/cr_restart for that error.
 */
#ifdef CR_ERROR_DEF
CR_ERROR_DEF(CR_ETEMPFAIL, "Temporary error: checkpoint cancelled")
CR_ERROR_DEF(CR_EPERMFAIL, "Permanent failure: checkpoint cancelled and job killed")
CR_ERROR_DEF(CR_ENOSUPPORT, "Checkpoint support not linked into one or more processes")
CR_ERROR_DEF(CR_EVERSION, "Requested kernel interface version is not supported")
CR_ERROR_DEF(CR_EOMITTED, "Process omitted from checkpoint at a callback's request")
CR_ERROR_DEF(CR_EBADARCH, "Context file does not match the kernel architecture")
CR_ERROR_DEF(CR_EPTRACED, "One or more target processes is being ptraced")
CR_ERROR_DEF(CR_EPTRACER, "One or more target processes has ptrace children")
CR_ERROR_DEF(CR_ERSTRTABRT, "Restart aborted: restart cancelled and job killed")
CR_ERROR_DEF(CR_ERESTARTED, "Request is invalid across a restart")
CR_ERROR_DEF(CR_ENOTCB, "Call is only valid from a checkpoint callback")
CR_ERROR_DEF(CR_ENOINIT, "Calling thread has not called cr_init()")
#else
#ifndef _BLCR_ERRCODES_H
#define _BLCR_ERRCODES_H 1
enum {
  CR_MIN_ERRCODE = 2353,
#define CR_ERROR_DEF(_name, _desc) _name,
#include <blcr_errcodes.h>
#undef CR_ERROR_DEF
  CR_MAX_ERRCODE
};
#endif /* _BLCR_ERRCODES_H */
#endif /* CR_ERROR_DEF */
