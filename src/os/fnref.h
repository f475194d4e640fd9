/* Naming a function so that another process running the same program can
 * find it, even where that process loaded the program and its libraries at
 * other addresses: the loaded object that holds the function (identified by
 * its GNU build-id, or by its name and size when it has none) and the
 * offset from that object's load address.  Used by MPI pools, whose tasks
 * run in other ranks. */
#ifndef MPROC_OS_FNREF_H
#define MPROC_OS_FNREF_H

#include <stdint.h>

#define MP__FNREF_ID 20

typedef struct {
    uint8_t id[MP__FNREF_ID];   /* build-id (zero-padded) or a name hash */
    uint32_t idlen;
    uint32_t pad;
    uint64_t offset;            /* from the object's load address */
} mp__fnref;

/* Any function pointer, converted to and from the real type by the caller. */
typedef void (*mp__anyfn)(void);

/* Name the function fn: 0, or MP_EFUNC when it is not inside the code of
 * a loaded object. */
int mp__fnref_make(mp__anyfn fn, mp__fnref *ref);

/* Find the function a reference names in this process: 0 and *fn, or
 * MP_EFUNC when no loaded object matches or the offset is not inside its
 * code. */
int mp__fnref_resolve(const mp__fnref *ref, mp__anyfn *fn);

#endif
