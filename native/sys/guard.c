#include "sys/guard.h"
#include <signal.h>
#include <stdbool.h>
#include <string.h>

__thread sigjmp_buf *stor_fault_jmp;
static struct sigaction previous;
static bool installed;

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
  sigjmp_buf *j = stor_fault_jmp;
  if (j) {
    stor_fault_jmp = NULL;
    siglongjmp(*j, 1);
  }
  /* Not a guarded access: behave as before we were loaded. */
  if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction) {
    previous.sa_sigaction(sig, si, uc);
    return;
  }
  if (!(previous.sa_flags & SA_SIGINFO) && previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(sig);
    return;
  }
  signal(SIGBUS, SIG_DFL); /* returning re-runs the access, which now kills the process as usual */
}

void stor_fault_guard_install(void) {
  if (installed) return;
  installed = true;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &previous);
}
