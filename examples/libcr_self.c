/*
 * libcr_self - a libcr program that checkpoints itself.
 *
 *   libcr_self OUTFILE IMAGE STEPS INTERVAL_MS AT MODE
 *
 * It does STEPS steps, INTERVAL_MS apart (each inside a critical section); after step AT it
 * requests a checkpoint of itself into IMAGE, in one of these ways (MODE):
 *   poll  cr_request_checkpoint() (CR_SCOPE_PROC, target 0 = itself, cr_fd = IMAGE opened for
 *         writing), then cr_poll_checkpoint() without a timeout;
 *   reap  the same request, then cr_wait_checkpoint(), cr_log_checkpoint() and
 *         cr_reap_checkpoint();
 *   file  the deprecated cr_request_file(IMAGE).
 * The original process sees the request succeed (poll/reap > 0) and goes on. A copy restarted
 * from IMAGE comes back inside the request: there the handle reports CR_ERESTARTED (cr_poll_*:
 * CR_POLL_CHKPT_ERR_POST with errno CR_ERESTARTED; cr_reap_*: -1 with errno CR_ERESTARTED).
 * A thread-context callback (tc) and a signal-context callback of the main thread (sm) record
 * what cr_checkpoint() returned (0 in the original, > 0 in a restarted copy) and the infos.
 *
 * Output (OUTFILE, written at the end):
 *   work state=HEX steps=N                (the same in every run with the same arguments)
 *   request mode=MODE rc=RC result=R errno=E
 *       rc: cr_request_checkpoint()'s return; result: poll's or reap's return; errno: errno
 *       after a negative result (0 otherwise); for MODE file all three are 0
 *   callback cb=NAME n=N ret=RET info=I requester=R target=P scope=S dest=PATH
 *       rinfo=RI rrequester=RR src=PATH
 * On stderr, once the request is done: "libcr_self: request done: result R errno E".
 * Ready ($CRKIT_READY) after cr_init and the registrations.
 */
#include "example_protocol.h"

#include <libcr.h>
#include <stdint.h>

enum { CB_TC, CB_SM, NUM_CBS };
static const char* const cb_names[NUM_CBS] = {"tc", "sm"};

struct record {
  int ret;
  int info, requester, target, scope;
  char dest[PATH_MAX];
  int rinfo, rrequester;
  char src[PATH_MAX];
};
#define MAX_RECORDS 8
static struct record records[NUM_CBS][MAX_RECORDS];
static int invocations[NUM_CBS];

static void copy_str(char* dst, const char* src) {
  size_t i = 0;
  if (src)
    for (; src[i] && i < PATH_MAX - 1; i++) dst[i] = src[i];
  dst[i] = '\0';
}

static int callback(void* arg) {
  const int cb = (int)(intptr_t)arg;
  const int n = __atomic_add_fetch(&invocations[cb], 1, __ATOMIC_SEQ_CST);
  struct record* r = n <= MAX_RECORDS ? &records[cb][n - 1] : NULL;
  const struct cr_checkpoint_info* ci = cr_get_checkpoint_info();
  if (r && ci) {
    r->info = 1;
    r->requester = (int)ci->requester;
    r->target = (int)ci->target;
    r->scope = (int)ci->scope;
    copy_str(r->dest, ci->dest);
  }
  const int ret = cr_checkpoint(0);
  if (r) {
    r->ret = ret;
    const struct cr_restart_info* ri = cr_get_restart_info();
    if (ri) {
      r->rinfo = 1;
      r->rrequester = (int)ri->requester;
      copy_str(r->src, ri->src);
    }
  }
  return 0;
}

static uint64_t mix(uint64_t s, long i) {
  s ^= (uint64_t)i + 0x9e3779b97f4a7c15ULL + (s << 6) + (s >> 2);
  s *= 0xc4ceb9fe1a85ec53ULL;
  return s ^ (s >> 29);
}

int main(int argc, char** argv) {
  ex_prog = "libcr_self";
  if (argc != 7) ex_usage("OUTFILE IMAGE STEPS INTERVAL_MS AT poll|reap|file");
  const char* outfile = argv[1];
  const char* image = argv[2];
  const long steps = ex_parse_long("STEPS", argv[3], 1, 1000000L);
  const long interval_ms = ex_parse_long("INTERVAL_MS", argv[4], 0, 60000L);
  const long at = ex_parse_long("AT", argv[5], 1, steps);
  const char* mode = argv[6];
  if (strcmp(mode, "poll") != 0 && strcmp(mode, "reap") != 0 && strcmp(mode, "file") != 0)
    ex_usage("OUTFILE IMAGE STEPS INTERVAL_MS AT poll|reap|file");

  cr_client_id_t id = cr_init();
  if (id < 0) ex_fail("cr_init: %s", cr_strerror(errno));
  if (cr_register_callback(callback, (void*)(intptr_t)CB_TC, CR_THREAD_CONTEXT) < 0)
    ex_fail("cr_register_callback(tc): %s", cr_strerror(errno));
  if (cr_register_callback(callback, (void*)(intptr_t)CB_SM, CR_SIGNAL_CONTEXT) < 0)
    ex_fail("cr_register_callback(sm): %s", cr_strerror(errno));
  ex_ready(NULL);

  uint64_t state = 0x0123456789abcdefULL;
  int rc = 0, result = 0, result_errno = 0;
  for (long i = 1; i <= steps; i++) {
    if (cr_enter_cs(id) != 0) ex_fail("cr_enter_cs: %s", cr_strerror(errno));
    state = mix(state, i);
    if (cr_leave_cs(id) != 0) ex_fail("cr_leave_cs: %s", cr_strerror(errno));
    if (i == at) {
      if (strcmp(mode, "file") == 0) {
/* The deprecated entry point is what this mode is about. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        cr_request_file(image);
#pragma GCC diagnostic pop
      } else {
        int fd = open(image, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) ex_fail("cannot open %s: %s", image, strerror(errno));
        cr_checkpoint_args_t args;
        if (cr_initialize_checkpoint_args_t(&args) != 0)
          ex_fail("cr_initialize_checkpoint_args_t: %s", cr_strerror(errno));
        args.cr_scope = CR_SCOPE_PROC;
        args.cr_target = 0;
        args.cr_fd = fd;
        cr_checkpoint_handle_t h;
        rc = cr_request_checkpoint(&args, &h);
        if (rc != 0) ex_fail("cr_request_checkpoint: %s", cr_strerror(errno));
        if (strcmp(mode, "poll") == 0) {
          do {
            errno = 0;
            result = cr_poll_checkpoint(&h, NULL);
          } while (result == CR_POLL_CHKPT_ERR_PRE && errno == EINTR);
        } else {
          int w;
          do w = cr_wait_checkpoint(&h, NULL);
          while (w < 0 && errno == EINTR);
          if (w <= 0) ex_fail("cr_wait_checkpoint returned %d: %s", w, cr_strerror(errno));
          char msg[512] = "";
          if (cr_log_checkpoint(&h, sizeof msg, msg) < 0)
            ex_fail("cr_log_checkpoint: %s", cr_strerror(errno));
          if (msg[0]) fprintf(stderr, "libcr_self: checkpoint messages: %s", msg);
          errno = 0;
          result = cr_reap_checkpoint(&h);
        }
        result_errno = result < 0 ? errno : 0;
        (void)close(fd); /* (a restarted copy may not have it: the image is not saved in itself) */
      }
      fprintf(stderr, "libcr_self: request done: result %d errno %d (%s)\n", result, result_errno,
              result_errno ? cr_strerror(result_errno) : "-");
    }
    ex_sleep_ms(interval_ms);
  }

  size_t cap = 512 + (size_t)NUM_CBS * MAX_RECORDS * (2 * PATH_MAX + 256);
  char* text = malloc(cap);
  if (!text) ex_fail("out of memory");
  size_t len = (size_t)snprintf(text, cap, "work state=%016llx steps=%ld\n",
                                (unsigned long long)state, steps);
  len += (size_t)snprintf(text + len, cap - len, "request mode=%s rc=%d result=%d errno=%d\n", mode,
                          rc, result, result_errno);
  for (int cb = 0; cb < NUM_CBS; cb++)
    for (int n = 1; n <= invocations[cb] && n <= MAX_RECORDS; n++) {
      const struct record* r = &records[cb][n - 1];
      len += (size_t)snprintf(text + len, cap - len,
                              "callback cb=%s n=%d ret=%d info=%d requester=%d target=%d "
                              "scope=%d dest=%s rinfo=%d rrequester=%d src=%s\n",
                              cb_names[cb], n, r->ret, r->info, r->requester, r->target, r->scope,
                              r->dest, r->rinfo, r->rrequester, r->src);
    }
  ex_write_file(outfile, text);
  free(text);
  fprintf(stderr, "libcr_self: done, %ld steps\n", steps);
  return 0;
}
