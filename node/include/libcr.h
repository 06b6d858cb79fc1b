/* libcr.h - the BLCR-compatible checkpoint/restart API of crkit's libcr.
 *
 * Names, values and meanings are BLCR 0.8.6's, so that BLCR clients build and run unchanged.
 * Functions return -1 and set errno on failure unless said otherwise; errno may hold one of
 * the CR_E* codes of blcr_errcodes.h (cr_strerror() knows them).
 */
#ifndef _LIBCR_H
#define _LIBCR_H 1

#include <features.h>
#include <sys/types.h>
#include <sys/select.h>
#include <errno.h>
#include <blcr_common.h>

__BEGIN_DECLS

/* ---- Types ---- */
typedef int cr_version_t;
#define CR_CHECKPOINT_ARGS_VERSION 1
#define CR_RESTART_ARGS_VERSION 1

#define CR_MAX_CALLBACKS 0x1FFFFFF

typedef int (*cr_callback_t)(void *);
typedef int cr_client_id_t;
typedef int cr_callback_id_t;
typedef unsigned int cr_spinlock_t;
#define CR_SPINLOCK_INITIALIZER 0U
typedef long cr_bool_t;
typedef unsigned long cr_checkpoint_handle_t; /* a selectable file descriptor */
typedef unsigned long cr_restart_handle_t;    /* a selectable file descriptor */

typedef enum { cr_format_vmadump = 0 } cr_format_t;

/* What cr_target names; cr_target 0 means the caller's own pid, pgid or sid. */
typedef enum { CR_SCOPE_PROC = 0, CR_SCOPE_PGRP = 1, CR_SCOPE_SESS = 2, CR_SCOPE_TREE = 3 } cr_scope_t;

struct cr_checkpoint_info {
  int signal;          /* signal sent after the checkpoint, 0 if none */
  const char *dest;    /* canonical path of the context file ("" if not in a file system) */
  pid_t requester;     /* pid of the requester */
  pid_t target;        /* the pid, pgid or sid requested */
  cr_scope_t scope;
};

struct cr_restart_info {
  pid_t requester;     /* pid of the process that requested the restart */
  const char *src;     /* path of the context file */
};

enum { CR_STATE_IDLE = 0, CR_STATE_PENDING = 1, CR_STATE_ACTIVE = 2 };

typedef struct cr_checkpoint_args {
  cr_version_t cr_version;
  cr_scope_t cr_scope;
  pid_t cr_target;
  int cr_fd;
  int cr_signal;
  unsigned int cr_timeout; /* seconds, 0 = unbounded */
  unsigned int cr_flags;
} cr_checkpoint_args_t;

struct cr_rstrt_relocate_pair {
  const char *oldpath;
  const char *newpath;
};
struct cr_rstrt_relocate {
  unsigned int count;
  struct cr_rstrt_relocate_pair path[];
};
#define CR_RSTRT_RELOCATE_SIZE(_cnt) \
  (sizeof(struct cr_rstrt_relocate) + (_cnt) * sizeof(struct cr_rstrt_relocate_pair))
#define CR_MAX_RSTRT_RELOC 16

typedef struct cr_restart_args {
  cr_version_t cr_version;
  int cr_fd;
  int cr_signal;
  unsigned int cr_flags;
  struct cr_rstrt_relocate *cr_relocate;
} cr_restart_args_t;

typedef enum {
  CR_HOOK_CONT_SIGNAL_CONTEXT = 0,
  CR_HOOK_CONT_THREAD_CONTEXT,
  CR_HOOK_CONT_NO_CALLBACKS,
  CR_HOOK_RSTRT_SIGNAL_CONTEXT,
  CR_HOOK_RSTRT_THREAD_CONTEXT,
  CR_HOOK_RSTRT_NO_CALLBACKS,
  CR_NUM_HOOKS
} cr_hook_event_t;
typedef void (*cr_hook_fn_t)(cr_hook_event_t);
#define CR_HOOK_FN_ERROR ((cr_hook_fn_t)(~0UL))

/* ---- Constants ---- */
#define CR_THREAD_CONTEXT 0x4000000
#define CR_SIGNAL_CONTEXT 0x2000000
#define CR_ID_CALLBACK ((cr_client_id_t)(-1))

enum {
  CR_CHECKPOINT_READY = 0,
  CR_CHECKPOINT_TEMP_FAILURE = 1,
  CR_CHECKPOINT_PERM_FAILURE = 2,
  CR_CHECKPOINT_OMIT = 4,
  _CR_CHECKPOINT_STUB = 0x4000
};
#define CR_CHECKPOINT_TEMP_FAILURE_CODE(_v) (CR_CHECKPOINT_TEMP_FAILURE | ((_v) << 16))
#define CR_CHECKPOINT_PERM_FAILURE_CODE(_v) (CR_CHECKPOINT_PERM_FAILURE | ((_v) << 16))
#define CR_CHECKPOINT_ABORT_MASK \
  (CR_CHECKPOINT_TEMP_FAILURE | CR_CHECKPOINT_PERM_FAILURE | CR_CHECKPOINT_OMIT)

#define CR_CHKPT_PROHIBIT_SELF 0x00000001
#define CR_CHKPT_PTRACED_ALLOW 0x00000002
#define CR_CHKPT_PTRACED_SKIP 0x00000004
#define CR_CHKPT_PTRACER_SKIP 0x00000008
#define CR_CHKPT_ASYNC_ERR 0x00000010
#define CR_CHKPT_DUMP_EXEC 0x0200
#define CR_CHKPT_DUMP_PRIVATE 0x0400
#define CR_CHKPT_DUMP_SHARED 0x0800
#define CR_CHKPT_DUMP_ALL (CR_CHKPT_DUMP_EXEC | CR_CHKPT_DUMP_PRIVATE | CR_CHKPT_DUMP_SHARED)
#define CR_DEST_CWD (-4096)

#define CR_RSTRT_ASYNC_ERR 0x00000001
#define CR_RSTRT_RESTORE_PID 0x00000002
#define CR_RSTRT_RESTORE_PGID 0x00000004
#define CR_RSTRT_RESTORE_SID 0x00000008

#define CR_POLL_CHKPT_ERR_PRE (-1)
#define CR_POLL_CHKPT_ERR_POST (-2)
#define CR_POLL_CHKPT_ERR_LOG (-3)
#define CR_POLL_RSTRT_ERR_PRE (-1)
#define CR_POLL_RSTRT_ERR_POST (-2)
#define CR_POLL_RSTRT_ERR_LOG (-3)

enum { CR_HOLD_SCOPE_THREAD = 0, CR_HOLD_SCOPE_INIT, CR_HOLD_SCOPE_UNINIT };
#define CR_HOLD_READ (-1)
#define CR_HOLD_NONE 0
#define CR_HOLD_CONT 1
#define CR_HOLD_RSTRT 2
#define CR_HOLD_BOTH 3
#define CR_HOLD_DFLT 4

/* ---- Functions ---- */
extern cr_client_id_t cr_init(void);

extern int cri_init_checkpoint_args_t(cr_version_t, cr_checkpoint_args_t *);
#define cr_initialize_checkpoint_args_t(_a) \
  cri_init_checkpoint_args_t(CR_CHECKPOINT_ARGS_VERSION, (_a))
extern int cr_request_checkpoint(cr_checkpoint_args_t *, cr_checkpoint_handle_t *);
extern int cr_forward_checkpoint(cr_scope_t, pid_t);
extern int cr_wait_checkpoint(cr_checkpoint_handle_t *, struct timeval *);
extern int cr_log_checkpoint(cr_checkpoint_handle_t *, unsigned int, char *);
extern int cr_reap_checkpoint(cr_checkpoint_handle_t *);
extern int cr_poll_checkpoint_msg(cr_checkpoint_handle_t *, struct timeval *, char **);
extern int cr_poll_checkpoint(cr_checkpoint_handle_t *, struct timeval *);

extern int cri_init_restart_args_t(cr_version_t, cr_restart_args_t *);
#define cr_initialize_restart_args_t(_a) cri_init_restart_args_t(CR_RESTART_ARGS_VERSION, (_a))
extern int cr_request_restart(cr_restart_args_t *, cr_restart_handle_t *);
extern int cr_wait_restart(cr_restart_handle_t *, struct timeval *);
extern int cr_log_restart(cr_restart_handle_t *, unsigned int, char *);
extern int cr_reap_restart(cr_restart_handle_t *);
extern int cr_poll_restart_msg(cr_restart_handle_t *, struct timeval *, char **);
extern int cr_poll_restart(cr_restart_handle_t *, struct timeval *);

extern cr_callback_id_t cr_register_callback(cr_callback_t, void *, int);
extern int cr_replace_callback(cr_callback_id_t, cr_callback_t, void *, int);

extern int cr_enter_cs(cr_client_id_t);
extern int cr_tryenter_cs(cr_client_id_t);
extern int cr_leave_cs(cr_client_id_t);
extern int cr_status(void);

extern int cr_checkpoint(int);
extern int cr_replace_self(cr_callback_t, void *, int);
extern const struct cr_checkpoint_info *cr_get_checkpoint_info(void);
extern const struct cr_restart_info *cr_get_restart_info(void);

extern void cr_spinlock_init(cr_spinlock_t *);
extern void cr_spinlock_lock(cr_spinlock_t *);
extern void cr_spinlock_unlock(cr_spinlock_t *);
extern int cr_spinlock_trylock(cr_spinlock_t *);

extern const char *cr_strerror(int);

extern cr_hook_fn_t cr_register_hook(cr_hook_event_t, cr_hook_fn_t);
extern int cr_hold_ctrl(int, int);
extern int cr_inc_persist(void);
extern int cr_dec_persist(void);

extern void cr_request(void) _CR_DEPRECATED;
extern void cr_request_file(const char *) _CR_DEPRECATED;
extern void cr_request_fd(int) _CR_DEPRECATED;

/* Link-me symbols and the signal number, as BLCR exports them. */
extern int cr_link_me;
extern const int cri_signum;

__END_DECLS

#endif /* _LIBCR_H */
