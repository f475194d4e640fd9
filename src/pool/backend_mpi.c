/* MPI pools from libmproc's side: finding libmproc-mpi.
 *
 * libmproc never links libmpi: MPI pools live in libmproc-mpi.  A program
 * that links it (pkg-config --libs mproc-mpi) has its module at once,
 * through the weak reference below.  A program that links only the shared
 * libmproc gets it on demand: the first MP_POOL_MPI pool or mp_mpi_init
 * loads libmproc-mpi.so with dlopen, from libmproc.so's own directory
 * first, then the library path; its dependency on libmproc.so.0 resolves
 * to the copy already loaded, so there is one pool engine.  The static
 * libmproc.a never dlopens (the module would bring a second libmproc): a
 * static program links libmproc-mpi.a.  Without the module, MPI pools and
 * mp_mpi_init answer MP_ENOMPI. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mproc/error.h"
#include "pool/core.h"
#include "pool/mpi_module.h"

/* Defined when libmproc-mpi is linked in; NULL otherwise. */
extern const mp__mpi_module *mp__mpi_module_get(void) __attribute__((weak));

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const mp__mpi_module *module;

#ifdef MP_SHARED_LIB
#define MPI_LIB "libmproc-mpi.so." MP_SOVERSION_STR

/* dlopen libmproc-mpi beside libmproc.so, then by name. */
static void *open_module(void)
{
    Dl_info info;
    if (dladdr((void *)open_module, &info) && info.dli_fname) {
        const char *slash = strrchr(info.dli_fname, '/');
        if (slash) {
            char path[PATH_MAX];
            int n = snprintf(path, sizeof path, "%.*s/%s", (int)(slash - info.dli_fname),
                             info.dli_fname, MPI_LIB);
            if (n > 0 && (size_t)n < sizeof path) {
                void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
                if (h)
                    return h;
            }
        }
    }
    return dlopen(MPI_LIB, RTLD_NOW | RTLD_GLOBAL);
}
#endif

static void load(void)
{
    const mp__mpi_module *(*get)(void) = mp__mpi_module_get;
#ifdef MP_SHARED_LIB
    if (get == NULL) {
        void *h = open_module();
        if (h)
            *(void **)&get = dlsym(h, "mp__mpi_module_get");
    }
#endif
    const mp__mpi_module *m = get ? get() : NULL;
    if (m && m->abi == MP__MPI_ABI)
        module = m;
}

static const mp__mpi_module *mpi(void)
{
    pthread_once(&once, load);
    return module;
}

const pool_backend *mp__backend_mpi(int *err)
{
    const mp__mpi_module *m = mpi();
    *err = m ? 0 : MP_ENOMPI;
    return m ? m->backend : NULL;
}

int mp_mpi_init(void)
{
    const mp__mpi_module *m = mpi();
    return m ? m->init() : MP_ENOMPI;
}

int mp_mpi_finalize(void)
{
    /* Nothing to finalize unless the module was loaded (and used). */
    pthread_once(&once, load);
    return module ? module->finalize() : 0;
}

/* Launchers say who we are in the environment (Open MPI, then MPICH and
 * the PMI-based ones). */
int mp_mpi_rank(void)
{
    const char *v = getenv("OMPI_COMM_WORLD_RANK");
    if (v == NULL)
        v = getenv("PMI_RANK");
    if (v == NULL || *v == '\0')
        return -1;
    char *end;
    long n = strtol(v, &end, 10);
    return *end == '\0' && n >= 0 && n <= INT_MAX ? (int)n : -1;
}
