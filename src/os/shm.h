/* Named POSIX shared memory and the tracker process that removes a
 * creator's segments when the creator's process tree is gone. */
#ifndef MPROC_OS_SHM_H
#define MPROC_OS_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Which object a name stood for: a name can be removed and made again by
 * someone else, and only the object itself may be removed on its behalf. */
typedef struct {
    uint64_t dev, ino;
} mp__shm_id;

/* Create "/name" exclusively with size bytes and map it.  Returns 0 and
 * sets *fd, *data and *id, or -errno (-EEXIST, -EACCES, -ENOMEM...). */
int mp__shm_create(const char *name, size_t size, int *fd, void **data, mp__shm_id *id);
/* The identity of the object open as fd.  0 or -errno. */
int mp__shm_id_of(int fd, mp__shm_id *id);
/* Open and map an existing "/name"; its size comes back in *size. */
int mp__shm_open(const char *name, int *fd, void **data, size_t *size);
/* Remove the name.  0 or -errno (-ENOENT). */
int mp__shm_unlink(const char *name);
/* Remove the name if it still stands for the object id: 0, -ENOENT (gone,
 * or now another object's, which stays), or -errno.  (Between the check
 * and the removal the name could change hands again: a window of two
 * system calls, where removing by name alone has no window at all.) */
int mp__shm_unlink_if(const char *name, const mp__shm_id *id);

/* Tell the tracker to remove the object id, created as name, when the
 * tree is gone (register) or not to (unregister).  The first registration
 * starts the tracker: a process that is no child of ours (it is forked
 * twice), ignores SIGINT and SIGTERM, keeps only its end of a pipe whose
 * write end this process and everything it forks afterwards hold, and,
 * once every write end is closed (every holder exited, however), removes
 * each object still registered whose name still stands for it (as
 * mp__shm_unlink_if).  It registers any number of them.  Returns 0 or
 * -errno. */
int mp__shm_track(const char *name, const mp__shm_id *id, bool keep_track);

#endif
