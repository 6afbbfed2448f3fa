/* Image locking compatible with QEMU's file driver (block/file-posix.c): open file description (OFD)
 * byte-range locks on the image, so that stor, QEMU, qemu-storage-daemon and qemu-img see each
 * other. QEMU describes a user of an image by the permissions it takes and those it shares with
 * others, one bit each (consistent read 0, write 1, write unchanged 2, resize 3): taking permission
 * i is a shared (read) lock on byte 100 + i, not sharing it a shared lock on byte 200 + i. Opening
 * checks the opposite bytes: nobody may refuse to share what we take (200 + i), nobody may hold what
 * we refuse to share (100 + i). stor implements this subset:
 *   read-only   takes consistent read, shares everything;
 *   writable    takes consistent read and write, shares consistent read and write-unchanged (not
 *               write: a second writer, stor or QEMU, is refused; not resize: the capacity is fixed).
 * The locks go away with the fd (OFD locks belong to the open file description). */
#ifndef STOR_IMAGE_LOCK_H
#define STOR_IMAGE_LOCK_H
#include <stdbool.h>
#include <stddef.h>

enum image_locking { IMAGE_LOCKING_AUTO = 0, IMAGE_LOCKING_ON = 1, IMAGE_LOCKING_OFF = 2 };

/* "on" | "off" | "auto" (and the usual on/off spellings); -1 for anything else. */
int image_locking_parse(const char *s);

/* Takes the locks for a read-only or writable user on fd and checks nobody conflicts. Returns 0;
 * -EBUSY when another user conflicts, with QEMU's wording and the holder (pid and command) when
 * /proc shows it in err; with locking=on, -errno when the file system has no OFD locks (auto skips
 * locking there, as QEMU does). On failure the locks taken so far are dropped. */
int image_lock(int fd, const char *path, bool writable, enum image_locking mode, char *err, size_t errlen);

#endif
