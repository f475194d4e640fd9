/* Function references through the dynamic loader's list of loaded objects
 * (dl_iterate_phdr): an object is identified by the GNU build-id note the
 * linker puts in it; one without such a note by an FNV-1a hash of its file
 * name and the extent of its loadable segments.  A reference is valid only
 * if its offset lands in an executable segment of the object, on both
 * sides. */
#define _GNU_SOURCE
#include <elf.h>
#include <link.h>
#include <stdbool.h>
#include <string.h>

#include "mproc/error.h"
#include "os/fnref.h"

typedef struct {
    /* in */
    uintptr_t addr;             /* make: the address to find */
    const mp__fnref *want;      /* resolve: the reference to match */
    /* out */
    mp__fnref ref;
    uintptr_t found;
    bool ok;
} search;

static bool in_code(const struct dl_phdr_info *o, uintptr_t off)
{
    for (int i = 0; i < o->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &o->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && off >= ph->p_vaddr &&
            off - ph->p_vaddr < ph->p_memsz)
            return true;
    }
    return false;
}

static void object_id(const struct dl_phdr_info *o, mp__fnref *ref)
{
    memset(ref->id, 0, sizeof ref->id);
    for (int i = 0; i < o->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &o->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const unsigned char *p = (const unsigned char *)(o->dlpi_addr + ph->p_vaddr);
        size_t left = ph->p_memsz;
        while (left >= sizeof(ElfW(Nhdr))) {
            const ElfW(Nhdr) *n = (const ElfW(Nhdr) *)(const void *)p;
            size_t name = (n->n_namesz + 3) & ~(size_t)3, desc = (n->n_descsz + 3) & ~(size_t)3;
            size_t all = sizeof *n + name + desc;
            if (all > left)
                break;
            if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 &&
                memcmp(p + sizeof *n, "GNU", 4) == 0 && n->n_descsz > 0) {
                size_t len = n->n_descsz < MP__FNREF_ID ? n->n_descsz : MP__FNREF_ID;
                memcpy(ref->id, p + sizeof *n + name, len);
                ref->idlen = (uint32_t)len;
                return;
            }
            p += all;
            left -= all;
        }
    }
    /* No build-id: the file name and the segments' extent. */
    uint64_t h = 0xcbf29ce484222325ull;
    const char *name = o->dlpi_name ? o->dlpi_name : "";
    for (const char *c = name; *c; c++)
        h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
    for (int i = 0; i < o->dlpi_phnum; i++)
        if (o->dlpi_phdr[i].p_type == PT_LOAD)
            h = (h ^ (uint64_t)(o->dlpi_phdr[i].p_vaddr + o->dlpi_phdr[i].p_memsz)) *
                0x100000001b3ull;
    memcpy(ref->id, &h, sizeof h);
    ref->idlen = 0; /* marks a hash, not a build-id */
}

static int visit(struct dl_phdr_info *o, size_t size, void *arg)
{
    (void)size;
    search *s = arg;
    if (s->want == NULL) {
        if (s->addr < o->dlpi_addr || !in_code(o, s->addr - o->dlpi_addr))
            return 0;
        object_id(o, &s->ref);
        s->ref.offset = s->addr - o->dlpi_addr;
        s->ok = true;
        return 1;
    }
    mp__fnref id;
    object_id(o, &id);
    if (id.idlen != s->want->idlen || memcmp(id.id, s->want->id, sizeof id.id) != 0)
        return 0;
    if (!in_code(o, (uintptr_t)s->want->offset))
        return 0;
    s->found = o->dlpi_addr + (uintptr_t)s->want->offset;
    s->ok = true;
    return 1;
}

/* The last answer of each kind, per thread: tasks mostly reuse one
 * function, and the loader's list is walked under its lock. */
static _Thread_local struct { mp__anyfn fn; mp__fnref ref; } last_made;
static _Thread_local struct { mp__fnref ref; mp__anyfn fn; } last_resolved;

int mp__fnref_make(mp__anyfn fn, mp__fnref *ref)
{
    if (fn == NULL)
        return MP_EFUNC;
    if (fn == last_made.fn) {
        *ref = last_made.ref;
        return 0;
    }
    search s = {.addr = (uintptr_t)fn};
    dl_iterate_phdr(visit, &s);
    if (!s.ok)
        return MP_EFUNC;
    *ref = s.ref;
    last_made.fn = fn;
    last_made.ref = s.ref;
    return 0;
}

int mp__fnref_resolve(const mp__fnref *ref, mp__anyfn *fn)
{
    if (last_resolved.fn && memcmp(&last_resolved.ref, ref, sizeof *ref) == 0) {
        *fn = last_resolved.fn;
        return 0;
    }
    search s = {.want = ref};
    dl_iterate_phdr(visit, &s);
    if (!s.ok)
        return MP_EFUNC;
    *fn = (mp__anyfn)s.found;
    last_resolved.ref = *ref;
    last_resolved.fn = *fn;
    return 0;
}
