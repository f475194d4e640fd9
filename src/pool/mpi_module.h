/* The MPI module: what libmproc-mpi hands libmproc when it is loaded
 * (by linking it, or on demand with dlopen: backend_mpi.c). */
#ifndef MPROC_POOL_MPI_MODULE_H
#define MPROC_POOL_MPI_MODULE_H

#include "export_int.h"
#include "mproc/common.h"
#include "pool/core.h"

/* Built from the same sources as the libmproc that loads it, or refused. */
#define MP__MPI_ABI MP_VERSION_NUM

typedef struct {
    unsigned abi;                   /* MP__MPI_ABI */
    const pool_backend *backend;    /* MP_POOL_MPI */
    int (*init)(void);              /* mp_mpi_init */
    int (*finalize)(void);          /* mp_mpi_finalize */
} mp__mpi_module;

/* In libmproc-mpi: its module. */
MP_INTERNAL const mp__mpi_module *mp__mpi_module_get(void);

#endif
