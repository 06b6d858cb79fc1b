/* blcr_proc.h - BLCR's control file name. crkit has no kernel module and no such file; the
 * name is kept so that code mentioning it still builds. */
#ifndef _BLCR_PROC_H
#define _BLCR_PROC_H 1
#define CR_CTRL_FILE "/proc/checkpoint/ctrl"
#endif
