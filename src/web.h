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

/*
 * The sign-in page GET /dashboard answers (401) when an access key is set
 * and the request does not carry it.  It holds no data of the proxy's: it
 * asks for the key once, keeps it in sessionStorage (per origin and per
 * tab, gone with the tab; never a cookie, which every port of the host
 * would receive), fetches /dashboard again with x-zephyr-key and replaces
 * itself with the page; the page sends the key with every request.
 */
const char *web_login_page(size_t *len);

#endif
