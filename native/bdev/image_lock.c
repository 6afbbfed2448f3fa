/* QEMU-compatible image locks (see image_lock.h): OFD byte locks at 100 + permission and 200 +
 * unshared permission, taken first and then checked against everyone else's, as QEMU does (two
 * openers racing both see the other and both fail, which is safe). When another user conflicts, the
 * holder is looked up in /proc/PID/fdinfo (OFD locks carry no pid; fdinfo lists each open file's
 * locks), only on that failure path. */
#include "bdev/image_lock.h"
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define LOCK_PERM_BASE   100
#define LOCK_SHARED_BASE 200

/* QEMU's permission bits (BLK_PERM_*), by bit index */
enum { PERM_CONSISTENT_READ = 0, PERM_WRITE = 1, PERM_WRITE_UNCHANGED = 2, PERM_RESIZE = 3, PERM_COUNT = 4 };
static const char *const perm_names[PERM_COUNT] = {"consistent read", "write", "write unchanged", "resize"};

int image_locking_parse(const char *s) {
  if (!s || !strcmp(s, "auto")) return IMAGE_LOCKING_AUTO;
  if (!strcmp(s, "on") || !strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes")) return IMAGE_LOCKING_ON;
  if (!strcmp(s, "off") || !strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no")) return IMAGE_LOCKING_OFF;
  return -1;
}

static int ofd_lock(int fd, off_t start, off_t len, short type) {
  struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
  return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 1 if another open file description holds a lock on the byte, 0 if not, -errno */
static int ofd_conflict(int fd, off_t byte) {
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
  if (fcntl(fd, F_OFD_GETLK, &fl) < 0) return -errno;
  return fl.l_type != F_UNLCK;
}

static void unlock_all(int fd) { ofd_lock(fd, LOCK_PERM_BASE, 2 * (LOCK_SHARED_BASE - LOCK_PERM_BASE), F_UNLCK); }

/* Whether one fdinfo file lists an OFD lock on dev:ino covering byte. */
static bool fdinfo_has_lock(const char *file, unsigned maj, unsigned min, unsigned long ino, unsigned long long byte) {
  FILE *f = fopen(file, "re");
  if (!f) return false;
  char line[256];
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) {
    if (strncmp(line, "lock:", 5) || !strstr(line, "OFDLCK") || strstr(line, "->")) continue;
    unsigned lmaj, lmin;
    unsigned long lino;
    unsigned long long start;
    char end[32];
    const char *p = strstr(line, "OFDLCK");
    if (sscanf(p, "OFDLCK %*s %*s %*d %x:%x:%lu %llu %31s", &lmaj, &lmin, &lino, &start, end) != 5) continue;
    if (lmaj != maj || lmin != min || lino != ino || byte < start) continue;
    found = !strcmp(end, "EOF") || byte <= strtoull(end, NULL, 10);
  }
  fclose(f);
  return found;
}

/* "pid N (comm)" of a process (other than our fd) holding an OFD lock on byte of fd's file; "" if
 * /proc does not say. */
static void find_holder(int fd, unsigned long long byte, char *out, size_t outlen) {
  out[0] = '\0';
  struct stat st;
  if (fstat(fd, &st) < 0) return;
  DIR *proc = opendir("/proc");
  if (!proc) return;
  pid_t self = getpid();
  struct dirent *pe;
  while (!out[0] && (pe = readdir(proc))) {
    if (!isdigit((unsigned char)pe->d_name[0])) continue;
    char dir[300];
    snprintf(dir, sizeof dir, "/proc/%s/fdinfo", pe->d_name);
    DIR *fds = opendir(dir);
    if (!fds) continue;
    long pid = strtol(pe->d_name, NULL, 10);
    struct dirent *fe;
    while ((fe = readdir(fds))) {
      if (!isdigit((unsigned char)fe->d_name[0])) continue;
      if (pid == self && strtol(fe->d_name, NULL, 10) == fd) continue; /* our own lock */
      char file[600];
      snprintf(file, sizeof file, "%s/%s", dir, fe->d_name);
      if (!fdinfo_has_lock(file, major(st.st_dev), minor(st.st_dev), (unsigned long)st.st_ino, byte)) continue;
      char comm[64] = "";
      snprintf(file, sizeof file, "/proc/%ld/comm", pid);
      FILE *c = fopen(file, "re");
      if (c) {
        if (fgets(comm, sizeof comm, c)) comm[strcspn(comm, "\n")] = '\0';
        fclose(c);
      }
      snprintf(out, outlen, "%s pid %ld%s%s%s", pid == self ? "this process," : "held by", pid, comm[0] ? " (" : "",
               comm, comm[0] ? ")" : "");
      break;
    }
    closedir(fds);
  }
  closedir(proc);
}

int image_lock(int fd, const char *path, bool writable, enum image_locking mode, char *err, size_t errlen) {
  if (mode == IMAGE_LOCKING_OFF) return 0;
  unsigned perm = 1u << PERM_CONSISTENT_READ, unshared = 0;
  if (writable) {
    perm |= 1u << PERM_WRITE;
    unshared = (1u << PERM_WRITE) | (1u << PERM_RESIZE);
  }
  for (int i = 0; i < PERM_COUNT; i++) {
    for (int shared_byte = 0; shared_byte < 2; shared_byte++) {
      if (!((shared_byte ? unshared : perm) & (1u << i))) continue;
      int r = ofd_lock(fd, (shared_byte ? LOCK_SHARED_BASE : LOCK_PERM_BASE) + i, 1, F_RDLCK);
      if (!r) continue;
      unlock_all(fd);
      bool unsupported = r == -EINVAL || r == -EOPNOTSUPP || r == -ENOLCK || r == -ENOSYS;
      if (unsupported && mode == IMAGE_LOCKING_AUTO) return 0; /* no OFD locks here: open unlocked, as QEMU's auto */
      snprintf(err, errlen, "%s: cannot lock the image: %s%s", path, strerror(-r),
               unsupported ? " (this file system has no OFD locks: locking=off or locking=auto opens it unlocked)"
                           : "");
      return r;
    }
  }
  /* Nobody may refuse to share what we take, nobody may hold what we do not share. */
  for (int i = 0; i < PERM_COUNT; i++) {
    for (int shared_byte = 0; shared_byte < 2; shared_byte++) {
      unsigned mask = shared_byte ? unshared : perm;
      if (!(mask & (1u << i))) continue;
      /* taking perm i conflicts with a lock on 200 + i; not sharing it with a lock on 100 + i */
      off_t byte = (shared_byte ? LOCK_PERM_BASE : LOCK_SHARED_BASE) + i;
      int c = ofd_conflict(fd, byte);
      if (c == 0) continue;
      if (c < 0) {
        unlock_all(fd);
        snprintf(err, errlen, "%s: cannot test the image's locks: %s", path, strerror(-c));
        return c;
      }
      char holder[128];
      find_holder(fd, (unsigned long long)byte, holder, sizeof holder);
      unlock_all(fd);
      snprintf(err, errlen, "%s: Failed to get %s\"%s\" lock: another process is using the image%s%s%s", path,
               shared_byte ? "shared " : "", perm_names[i], holder[0] ? " (" : "", holder, holder[0] ? ")" : "");
      return -EBUSY;
    }
  }
  return 0;
}
