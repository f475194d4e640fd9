/* MP_INTERNAL marks the internal functions that libmproc-mpi calls: they
 * are exported from libmproc.so, but they are no API (mp__ names, no
 * installed header).  The two libraries of one build go together, and
 * the MPI module checks the version it was built with when it is loaded. */
#ifndef MPROC_EXPORT_INT_H
#define MPROC_EXPORT_INT_H

#if defined(__GNUC__)
#define MP_INTERNAL __attribute__((visibility("default")))
#else
#define MP_INTERNAL
#endif

#endif
