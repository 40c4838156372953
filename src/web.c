/*
 * web: see web.h.  The page is embedded with the assembler's .incbin, so
 * web/dashboard.html stays an ordinary file to edit and no generated source
 * is needed; the Makefile makes web.o depend on it.  The path is relative
 * to the directory the compiler runs in, which is the repository root
 * (make runs there).  A NUL byte follows the page so it is also a C string.
 */
#include "web.h"

#include <stdint.h>

__asm__(".pushsection .rodata\n"
        ".global zephyr_web_page\n"
        ".hidden zephyr_web_page\n"
        ".type zephyr_web_page, @object\n"
        "zephyr_web_page:\n"
        ".incbin \"web/dashboard.html\"\n"
        "zephyr_web_page_end:\n"
        ".byte 0\n"
        ".balign 8\n"
        ".global zephyr_web_page_size\n"
        ".hidden zephyr_web_page_size\n"
        ".type zephyr_web_page_size, @object\n"
        "zephyr_web_page_size:\n"
        ".quad zephyr_web_page_end - zephyr_web_page\n"
        ".popsection\n");

/* The page's bytes and their number, both defined by the block above. */
extern const char zephyr_web_page[] __attribute__((visibility("hidden")));
extern const uint64_t zephyr_web_page_size __attribute__((visibility("hidden")));

const char *web_dashboard_page(size_t *len)
{
    if (len)
        *len = (size_t)zephyr_web_page_size;
    return zephyr_web_page;
}
