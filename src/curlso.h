/*
 * curlso: libcurl, loaded at run time on first use.
 *
 * The binary is not linked against libcurl.  src/curlso.c defines every
 * curl_* function the program calls; the first call that creates
 * something (curl_easy_init, curl_multi_init, curl_share_init,
 * curl_slist_append) dlopen()s libcurl.so.4, looks up the
 * real functions and runs curl_global_init(CURL_GLOBAL_DEFAULT).  A
 * configuration with only plain http:// endpoints, served by the built-in
 * client, therefore never maps libcurl and the TLS, LDAP, Kerberos and SSH
 * libraries it depends on (about 8 MB of resident memory).
 *
 * When libcurl cannot be loaded, one error line is logged and every
 * constructor returns NULL, so
 * callers take the error paths they already have for a failed
 * curl_easy_init().  The load is tried once.  Functions that take a handle
 * or a list only forward: a handle exists only if the load succeeded, and
 * NULL handles and lists never trigger a load.
 *
 * curl_global_init() and curl_global_cleanup() are not defined on purpose:
 * the load runs the one, curlso_cleanup() the other, and a call to either
 * fails to link rather than map libcurl for nothing.  Neither are
 * curl_easy_perform() (a blocking transfer has no place on the loop) and
 * curl_version() (curlso_version() never loads the library).
 *
 * Single-threaded use only, like the rest of the program's libcurl use.
 */
#ifndef ZEPHYR_CURLSO_H
#define ZEPHYR_CURLSO_H

#include <stdbool.h>

/* Loads libcurl now if it is not loaded yet: 0, or -1 (logged once) when
 * it cannot be loaded. */
int curlso_load(void);

/* True once libcurl is loaded and initialised. */
bool curlso_loaded(void);

/* libcurl's version line when it is loaded, else NULL.  Never loads it:
 * --version has no reason to map 8 MB of libraries. */
const char *curlso_version(void);

/* curl_global_cleanup() if libcurl was loaded; otherwise nothing.  The
 * library stays mapped: OpenSSL's exit handlers live in it. */
void curlso_cleanup(void);

#endif
