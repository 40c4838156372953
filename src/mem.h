/*
 * mem: gives back resident pages the process has finished with.
 *
 * The dynamic loader reads each object's symbol and relocation tables
 * (.dynsym, .dynstr, .gnu.version*, .rela.dyn, .rela.plt) while it
 * relocates the program at start: for libcrypto alone that is ~740 KB of
 * clean, file-backed pages that stay resident although, for an object
 * bound at start (BIND_NOW: libcrypto, libssl, libuv, this program), only
 * dlopen, dlsym and dladdr read them again.  mem_release_loader_pages()
 * drops those pages (madvise MADV_DONTNEED on a read-only private file
 * mapping: the kernel rereads a page from the page cache if it is ever
 * read again, its content cannot change).  docs/DESIGN.md ("Idle memory")
 * has the figures and the rules.  mem_release_offpath_code() does the same
 * for the code only a configuration parse runs.
 */
#ifndef ZEPHYR_MEM_H
#define ZEPHYR_MEM_H

#include <stddef.h>

/*
 * Drops the loader tables of every loaded object that is bound at start
 * and whose first segment holds nothing else (checked against its dynamic
 * section; an object whose layout is not understood is left alone).  The
 * hash tables (.gnu.hash, .hash) stay: a lazily bound library (libz,
 * libnghttp2, libc) resolving a function later reads every object's hash
 * table.  Does the work only when objects were loaded since the last call
 * (dl_iterate_phdr's counter), so a later dlopen (libcurl) is followed by
 * one more pass.  Returns the bytes given back by this call (0 when it had
 * nothing to do).  Not thread-safe against itself; call it from the loop.
 */
size_t mem_release_loader_pages(void);

/*
 * Drops the pages of the code the proxy's path never runs: toml++ and the
 * C++ runtime (a configuration parse), ncurses (--dashboard), which the
 * link groups between two markers (scripts/offpath-text.ld).  Call it once
 * after a parse; the next parse or a dashboard redraw faults back what it
 * runs.  Returns the bytes given back (0 in a build without the markers).
 */
size_t mem_release_offpath_code(void);

#endif
