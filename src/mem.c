/*
 * mem: see mem.h.
 *
 * For each loaded object (dl_iterate_phdr) the pass finds, from the
 * object's own dynamic section, where its loader tables are, and drops
 * only whole pages that hold nothing but those tables:
 *
 *  - the object must be bound at start (DF_BIND_NOW or DF_1_NOW): a lazily
 *    bound one reads its .rela.plt, .dynsym and .dynstr on the first call
 *    of each function, which may be on a request's path;
 *  - no text relocations (then the loader may have written the segment,
 *    and MADV_DONTNEED would throw the writes away);
 *  - the tables must lie in the object's first PT_LOAD, which must start
 *    at file offset 0 and be read-only, not executable (GNU ld's
 *    -z separate-code layout, the default on x86-64);
 *  - pages are dropped only where the tables follow one another with at
 *    most MEM_GAP bytes of padding between them, so a linker that puts
 *    .rodata in the same segment (lld) keeps it;
 *  - the ELF and program headers, every other program header's range
 *    (notes, RELRO, .dynamic, .eh_frame_hdr) and the hash tables are kept:
 *    dl_iterate_phdr readers (the C++ unwinder) read the headers, and a
 *    lazily bound library resolving a function walks every object's hash
 *    table (a miss there reads nothing else of the object).
 *
 * The pages are clean and file-backed, so giving them back loses nothing:
 * a later dlopen, dlsym or dladdr faults them in again from the page cache.
 */
#include "mem.h"

#include <elf.h>
#include <link.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* Largest padding between two loader tables that still counts as "next to
 * each other" (section alignment is at most 8 for these tables). */
#define MEM_GAP 64
/* Tables and kept ranges of one object: 10 tables, the program headers. */
#define MEM_MAX_PIECES 40

struct mem_piece {
    uintptr_t lo, hi;
    bool drop; /* a loader table; else a range that stays */
};

struct mem_obj {
    uintptr_t seg_lo, seg_hi; /* the first PT_LOAD */
    struct mem_piece p[MEM_MAX_PIECES];
    size_t n;
    bool full; /* a piece did not fit: the object is left alone */
};

struct mem_pass {
    uintptr_t page;
    unsigned long long adds; /* dl_iterate_phdr's load counter */
    size_t released;
};

static unsigned long long mem_adds_done; /* the counter at the last pass */

static bool mem_inside(const struct mem_obj *o, uintptr_t lo, uintptr_t hi)
{
    return lo >= o->seg_lo && lo <= hi && hi <= o->seg_hi;
}

static void mem_add(struct mem_obj *o, uintptr_t lo, uintptr_t hi, bool drop)
{
    /* A table outside the first segment is no concern of this pass; a
     * kept range is recorded clipped, since only its overlap matters. */
    if (hi <= lo || (drop && !mem_inside(o, lo, hi)))
        return;
    if (o->n == MEM_MAX_PIECES) {
        o->full = true;
        return;
    }
    o->p[o->n++] = (struct mem_piece){lo, hi, drop};
}

/* A dynamic-section address as a pointer into the first segment: glibc
 * relocates d_ptr in place (absolute), other loaders may not (relative to
 * the base).  0 when it points elsewhere. */
static uintptr_t mem_addr(const struct mem_obj *o, uintptr_t base, uintptr_t v)
{
    if (v >= o->seg_lo && v < o->seg_hi)
        return v;
    if (base && v < o->seg_hi - o->seg_lo && base + v >= o->seg_lo && base + v < o->seg_hi)
        return base + v;
    return 0;
}

/* Number of dynamic symbols and the end of the GNU hash table at h, or 0
 * if it does not fit in the segment. */
static size_t mem_gnu_hash(const struct mem_obj *o, uintptr_t h, uintptr_t *end)
{
    if (!mem_inside(o, h, h + 16))
        return 0;
    const uint32_t *hdr = (const uint32_t *)h;
    uint32_t nbuckets = hdr[0], symoffset = hdr[1], bloom = hdr[2];
    uintptr_t buckets = h + 16 + (uintptr_t)bloom * sizeof(ElfW(Addr));
    uintptr_t chain = buckets + (uintptr_t)nbuckets * 4;
    if (!mem_inside(o, buckets, chain))
        return 0;
    uint32_t last = 0;
    for (uint32_t i = 0; i < nbuckets; i++)
        if (((const uint32_t *)buckets)[i] > last)
            last = ((const uint32_t *)buckets)[i];
    if (last < symoffset) {
        *end = chain;
        return symoffset;
    }
    for (;;) {
        uintptr_t at = chain + (uintptr_t)(last - symoffset) * 4;
        if (!mem_inside(o, at, at + 4))
            return 0;
        if (*(const uint32_t *)at & 1)
            break;
        last++;
    }
    *end = chain + (uintptr_t)(last - symoffset + 1) * 4;
    return (size_t)last + 1;
}

/* The end of a version definition (need=false) or requirement chain of n
 * entries at v, or 0 if it leaves the segment. */
static uintptr_t mem_versions_end(const struct mem_obj *o, uintptr_t v, size_t n, bool need)
{
    uintptr_t end = v;
    for (size_t i = 0; i < n && v; i++) {
        size_t head = need ? sizeof(ElfW(Verneed)) : sizeof(ElfW(Verdef));
        if (!mem_inside(o, v, v + head))
            return 0;
        uint32_t aux_off, next_off;
        size_t naux;
        if (need) {
            const ElfW(Verneed) *vn = (const ElfW(Verneed) *)v;
            aux_off = vn->vn_aux, next_off = vn->vn_next, naux = vn->vn_cnt;
        } else {
            const ElfW(Verdef) *vd = (const ElfW(Verdef) *)v;
            aux_off = vd->vd_aux, next_off = vd->vd_next, naux = vd->vd_cnt;
        }
        if (v + head > end)
            end = v + head;
        uintptr_t a = v + aux_off;
        for (size_t k = 0; k < naux && aux_off; k++) {
            size_t ahead = need ? sizeof(ElfW(Vernaux)) : sizeof(ElfW(Verdaux));
            if (!mem_inside(o, a, a + ahead))
                return 0;
            if (a + ahead > end)
                end = a + ahead;
            uint32_t an =
                need ? ((const ElfW(Vernaux) *)a)->vna_next : ((const ElfW(Verdaux) *)a)->vda_next;
            if (!an)
                break;
            a += an;
        }
        v = next_off ? v + next_off : 0;
    }
    return end;
}

/* Reads the object's dynamic section into o's pieces.  false when the
 * object must be left alone. */
static bool mem_tables(struct mem_obj *o, uintptr_t base, const ElfW(Dyn) * dyn)
{
    uintptr_t at[40] = {0}; /* by tag; DT_RELR is 36 */
    uintptr_t gnu_hash = 0, versym = 0, verdef = 0, verneed = 0;
    size_t verdefnum = 0, verneednum = 0;
    bool now = false;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_TEXTREL: return false;
        case DT_FLAGS:
            if (d->d_un.d_val & DF_TEXTREL)
                return false;
            now |= (d->d_un.d_val & DF_BIND_NOW) != 0;
            break;
        case DT_FLAGS_1: now |= (d->d_un.d_val & DF_1_NOW) != 0; break;
        case DT_BIND_NOW: now = true; break;
        case DT_GNU_HASH: gnu_hash = mem_addr(o, base, d->d_un.d_ptr); break;
        case DT_VERSYM: versym = mem_addr(o, base, d->d_un.d_ptr); break;
        case DT_VERDEF: verdef = mem_addr(o, base, d->d_un.d_ptr); break;
        case DT_VERDEFNUM: verdefnum = d->d_un.d_val; break;
        case DT_VERNEED: verneed = mem_addr(o, base, d->d_un.d_ptr); break;
        case DT_VERNEEDNUM: verneednum = d->d_un.d_val; break;
        case DT_HASH:
        case DT_SYMTAB:
        case DT_STRTAB:
        case DT_RELA:
        case DT_REL:
        case DT_JMPREL:
#ifdef DT_RELR
        case DT_RELR:
#endif
            at[d->d_tag] = mem_addr(o, base, d->d_un.d_ptr);
            break;
        case DT_STRSZ:
        case DT_RELASZ:
        case DT_RELSZ:
        case DT_PLTRELSZ:
#ifdef DT_RELRSZ
        case DT_RELRSZ:
#endif
            at[d->d_tag] = d->d_un.d_val;
            break;
        default: break;
        }
    }
    if (!now || !at[DT_SYMTAB] || !at[DT_STRTAB])
        return false;
    size_t nsyms = 0;
    if (gnu_hash) {
        uintptr_t end = 0;
        nsyms = mem_gnu_hash(o, gnu_hash, &end);
        if (!nsyms)
            return false;
        mem_add(o, gnu_hash, end, false);
    }
    if (at[DT_HASH]) {
        if (!mem_inside(o, at[DT_HASH], at[DT_HASH] + 8))
            return false;
        const uint32_t *h = (const uint32_t *)at[DT_HASH];
        nsyms = h[1];
        mem_add(o, at[DT_HASH], at[DT_HASH] + (2 + (uintptr_t)h[0] + h[1]) * 4, false);
    }
    if (!nsyms)
        return false;
    mem_add(o, at[DT_SYMTAB], at[DT_SYMTAB] + nsyms * sizeof(ElfW(Sym)), true);
    mem_add(o, at[DT_STRTAB], at[DT_STRTAB] + at[DT_STRSZ], true);
    if (versym)
        mem_add(o, versym, versym + nsyms * sizeof(ElfW(Half)), true);
    if (verdef)
        mem_add(o, verdef, mem_versions_end(o, verdef, verdefnum, false), true);
    if (verneed)
        mem_add(o, verneed, mem_versions_end(o, verneed, verneednum, true), true);
    if (at[DT_RELA])
        mem_add(o, at[DT_RELA], at[DT_RELA] + at[DT_RELASZ], true);
    if (at[DT_REL])
        mem_add(o, at[DT_REL], at[DT_REL] + at[DT_RELSZ], true);
    if (at[DT_JMPREL])
        mem_add(o, at[DT_JMPREL], at[DT_JMPREL] + at[DT_PLTRELSZ], true);
#ifdef DT_RELR
    if (at[DT_RELR])
        mem_add(o, at[DT_RELR], at[DT_RELR] + at[DT_RELRSZ], true);
#endif
    return true;
}

/* Gives back the pages of [lo, hi) that no kept piece touches. */
static size_t mem_drop(const struct mem_obj *o, uintptr_t page, uintptr_t lo, uintptr_t hi)
{
    uintptr_t a = (lo + page - 1) & ~(page - 1), b = hi & ~(page - 1);
    for (size_t i = 0; i < o->n && a < b; i++) {
        const struct mem_piece *k = &o->p[i];
        if (k->drop || k->hi <= a || k->lo >= b)
            continue;
        if (k->lo <= a)
            a = (k->hi + page - 1) & ~(page - 1);
        else
            b = k->lo & ~(page - 1);
    }
    if (a >= b || madvise((void *)a, b - a, MADV_DONTNEED) != 0)
        return 0;
    return b - a;
}

static size_t mem_object(const struct dl_phdr_info *info, uintptr_t page)
{
    struct mem_obj o = {0};
    const ElfW(Phdr) *first = NULL, *dynamic = NULL;
    for (size_t i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (!first || ph->p_vaddr < first->p_vaddr))
            first = ph;
        if (ph->p_type == PT_DYNAMIC)
            dynamic = ph;
    }
    if (!first || !dynamic || first->p_offset != 0 || first->p_flags != PF_R ||
        first->p_filesz != first->p_memsz)
        return 0;
    uintptr_t base = info->dlpi_addr;
    o.seg_lo = base + first->p_vaddr;
    o.seg_hi = o.seg_lo + first->p_memsz;
    /* The ELF header and every non-loadable range stay. */
    uintptr_t ph_lo = (uintptr_t)info->dlpi_phdr;
    mem_add(&o, o.seg_lo, ph_lo + info->dlpi_phnum * sizeof(ElfW(Phdr)), false);
    for (size_t i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD && ph->p_type != PT_GNU_STACK)
            mem_add(&o, base + ph->p_vaddr, base + ph->p_vaddr + ph->p_memsz, false);
    }
    if (!mem_tables(&o, base, (const ElfW(Dyn) *)(base + dynamic->p_vaddr)) || o.full)
        return 0;
    /* Sort by start (a handful of pieces), then drop each run of tables
     * that follow one another. */
    for (size_t i = 1; i < o.n; i++)
        for (size_t j = i; j > 0 && o.p[j].lo < o.p[j - 1].lo; j--) {
            struct mem_piece t = o.p[j];
            o.p[j] = o.p[j - 1];
            o.p[j - 1] = t;
        }
    size_t released = 0;
    uintptr_t run_lo = 0, run_hi = 0;
    for (size_t i = 0; i <= o.n; i++) {
        const struct mem_piece *p = i < o.n ? &o.p[i] : NULL;
        if (p && p->drop && run_hi && p->lo <= run_hi + MEM_GAP) {
            if (p->hi > run_hi)
                run_hi = p->hi;
            continue;
        }
        if (run_hi)
            released += mem_drop(&o, page, run_lo, run_hi);
        run_lo = run_hi = 0;
        if (p && p->drop)
            run_lo = p->lo, run_hi = p->hi;
    }
    return released;
}

static int mem_each(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct mem_pass *pass = arg;
    if (size >= offsetof(struct dl_phdr_info, dlpi_adds) + sizeof info->dlpi_adds)
        pass->adds = info->dlpi_adds;
    if (pass->adds == mem_adds_done)
        return 1; /* nothing loaded since the last pass */
    pass->released += mem_object(info, pass->page);
    return 0;
}

size_t mem_release_loader_pages(void)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return 0;
    /* adds stays 1 where the C library has no load counter: one pass. */
    struct mem_pass pass = {(uintptr_t)page, 1, 0};
    dl_iterate_phdr(mem_each, &pass);
    mem_adds_done = pass.adds;
    return pass.released;
}

/* Set by scripts/offpath-text.ld; weak, so a link without it gives NULL. */
extern const char __zephyr_offpath_text_start[] __attribute__((weak, visibility("hidden")));
extern const char __zephyr_offpath_text_end[] __attribute__((weak, visibility("hidden")));

size_t mem_release_offpath_code(void)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)__zephyr_offpath_text_start;
    uintptr_t hi = (uintptr_t)__zephyr_offpath_text_end;
    if (page <= 0 || !lo || hi <= lo)
        return 0;
    /* Only pages wholly inside: the first and last are shared with the
     * proxy's code and .fini. */
    uintptr_t a = (lo + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t b = hi & ~((uintptr_t)page - 1);
    if (a >= b || madvise((void *)a, b - a, MADV_DONTNEED) != 0)
        return 0;
    return b - a;
}
