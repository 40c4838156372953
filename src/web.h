/*
 * web: the web dashboard served at GET /dashboard.
 *
 * The page (web/dashboard.html) is one self-contained HTML document with
 * its CSS and JavaScript inline: no CDN, no external fonts, no images, and
 * a Content-Security-Policy meta tag that forbids loading anything from
 * elsewhere.  It is built into the binary at compile time, so the proxy
 * serves it without reading files.  In the browser it polls GET /status
 * every second (relative URL) and drives POST /admin/<op>; it reads nothing
 * else, like the terminal dashboard.
 */
#ifndef ZEPHYR_WEB_H
#define ZEPHYR_WEB_H

#include <stddef.h>

/* The Content-Type to serve the page with. */
#define WEB_CONTENT_TYPE "text/html; charset=utf-8"

/*
 * The complete page: a static, NUL-terminated string that lives as long as
 * the program.  *len (when len is not NULL) gets its length without the NUL.
 */
const char *web_dashboard_page(size_t *len);

#endif
