/* Named POSIX shared memory and the tracker process that removes a
 * creator's segments when the creator's process tree is gone. */
#ifndef MPROC_OS_SHM_H
#define MPROC_OS_SHM_H

#include <stdbool.h>
#include <stddef.h>

/* Create "/name" exclusively with size bytes and map it.  Returns 0 and
 * sets *fd and *data, or -errno (-EEXIST, -EACCES, -ENOMEM...). */
int mp__shm_create(const char *name, size_t size, int *fd, void **data);
/* Open and map an existing "/name"; its size comes back in *size. */
int mp__shm_open(const char *name, int *fd, void **data, size_t *size);
/* Remove the name.  0 or -errno (-ENOENT). */
int mp__shm_unlink(const char *name);

/* Tell the tracker to remove name when the tree is gone (register) or not
 * to (unregister).  The first registration starts the tracker: a process
 * that is no child of ours (it is forked twice), ignores SIGINT and
 * SIGTERM, keeps only its end of a pipe whose write end this process and
 * everything it forks afterwards hold, and, once every write end is closed
 * (every holder exited, however), unlinks the names still registered.
 * Returns 0 or -errno. */
int mp__shm_track(const char *name, bool keep_track);

#endif
