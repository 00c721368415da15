#ifndef MUMU_INTERRUPT_H
#define MUMU_INTERRUPT_H
/* The one owner of SIGINT, SIGTERM and SIGHUP in a mumu process.
 *
 * Inside a cooperative section (long work that polls the flag) the first signal only raises the "interrupted"
 * flag: the work stops at its next check, aborts what it was writing and exits cleanly. Outside one, or at a
 * second signal, the handler removes the temporary files registered here (outputs being written under a
 * temporary name) and exits with 128 + the signal number. Everything the handler does is async-signal-safe
 * (unlink, _exit, sig_atomic_t). */

/* Installs the handlers (idempotent; called by the functions below). */
void mumu_interrupt_install(void);

/* Temporary files removed when a signal arrives. At most 256 at once; returns 0 when the table is full. */
int mumu_interrupt_register_temporary(const char *path);
void mumu_interrupt_unregister_temporary(const char *path);

/* Cooperative sections nest; while one is open, the first signal only raises the flag. */
void mumu_interrupt_enter_cooperative(void);
void mumu_interrupt_leave_cooperative(void);

/* The signal number that raised the flag, or 0. */
int mumu_interrupt_requested(void);
/* Lowers the flag (after the work that saw it has stopped). */
void mumu_interrupt_clear(void);

#endif
