/* Guest memory can vanish under us: a front-end may truncate the file behind a region after we
 * mapped it, and the next access raises SIGBUS. Code that touches guest memory runs with a
 * recovery point; the SIGBUS handler jumps back to it instead of killing the process, and the
 * caller drops that front-end. Seals cannot be required instead: libblkio's memfds and
 * hugetlbfs-backed guest RAM cannot be sealed. */
#ifndef STOR_GUARD_H
#define STOR_GUARD_H
#include <setjmp.h>
extern __thread sigjmp_buf *stor_fault_jmp;
/* Installs the process-wide handler (chaining to any previous one); idempotent. */
void stor_fault_guard_install(void);
#endif
