/*
 * curlso: see curlso.h.
 *
 * States: CURLSO_UNLOADED until a constructor runs, then CURLSO_LOADED or,
 * if dlopen, a symbol or curl_global_init failed, CURLSO_FAILED for good.
 * The real functions live in one table of pointers filled by dlsym; the
 * wrappers below have libcurl's own names and prototypes (from
 * <curl/curl.h>), so the rest of the program calls libcurl as usual.  A
 * curl_* function the program starts to use needs a pointer, a table row
 * and a wrapper here; until then the link fails with an undefined
 * reference, which says so.
 *
 * The variadic setters cannot pass their "..." on, so each reads its one
 * argument with the type libcurl documents for the option: for CURLOPT_*
 * and CURLMOPT_* the option number's range (CURLOPTTYPE_*), for
 * curl_easy_getinfo always a pointer (every CURLINFO_* type is returned
 * through one), for curl_share_setopt the option itself.
 */
#define CURL_DISABLE_TYPECHECK /* the gcc type-check macros would rename our definitions */
#include "curlso.h"

#include <curl/curl.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define CURLSO_LIB "libcurl.so.4"

enum curlso_state {
    CURLSO_UNLOADED = 0,
    CURLSO_LOADED,
    CURLSO_FAILED,
};

/* Any function pointer, to carry a callback through a variadic call. */
typedef void (*curlso_fn)(void);

static enum curlso_state curlso_state;

/* The real functions; they borrow from the mapped library, which is never
 * unmapped. */
struct curlso_fns {
    CURLcode (*global_init)(long);
    void (*global_cleanup)(void);
    char *(*version)(void);
    CURL *(*easy_init)(void);
    void (*easy_cleanup)(CURL *);
    void (*easy_reset)(CURL *);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    CURLcode (*easy_pause)(CURL *, int);
    const char *(*easy_strerror)(CURLcode);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_cleanup)(CURLM *);
    CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
    CURLMcode (*multi_add_handle)(CURLM *, CURL *);
    CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
    CURLMcode (*multi_assign)(CURLM *, curl_socket_t, void *);
    CURLMcode (*multi_socket_action)(CURLM *, curl_socket_t, int, int *);
    CURLMsg *(*multi_info_read)(CURLM *, int *);
    CURLSH *(*share_init)(void);
    CURLSHcode (*share_cleanup)(CURLSH *);
    CURLSHcode (*share_setopt)(CURLSH *, CURLSHoption, ...);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
};
static struct curlso_fns curlso_fns;

#define CURLSO_SYM(field)                                  \
    {                                                      \
        "curl_" #field, offsetof(struct curlso_fns, field) \
    }
static const struct {
    const char *name;
    size_t offset;
} curlso_syms[] = {
    CURLSO_SYM(global_init),   CURLSO_SYM(global_cleanup),      CURLSO_SYM(version),
    CURLSO_SYM(easy_init),     CURLSO_SYM(easy_cleanup),        CURLSO_SYM(easy_reset),
    CURLSO_SYM(easy_setopt),   CURLSO_SYM(easy_getinfo),        CURLSO_SYM(easy_pause),
    CURLSO_SYM(easy_strerror), CURLSO_SYM(multi_init),          CURLSO_SYM(multi_cleanup),
    CURLSO_SYM(multi_setopt),  CURLSO_SYM(multi_add_handle),    CURLSO_SYM(multi_remove_handle),
    CURLSO_SYM(multi_assign),  CURLSO_SYM(multi_socket_action), CURLSO_SYM(multi_info_read),
    CURLSO_SYM(share_init),    CURLSO_SYM(share_cleanup),       CURLSO_SYM(share_setopt),
    CURLSO_SYM(slist_append),  CURLSO_SYM(slist_free_all),
};

/* The library to load: $ZEPHYR_LIBCURL (a libcurl of one's own), else
 * the system's. */
static const char *curlso_lib(void)
{
    const char *lib = getenv("ZEPHYR_LIBCURL");
    return lib && *lib ? lib : CURLSO_LIB;
}

static void curlso_fail(const char *what, const char *detail)
{
    log_error("cannot load %s (needed for https:// endpoints and proxies): %s%s", curlso_lib(),
              what, detail ? detail : "");
    curlso_state = CURLSO_FAILED;
}

int curlso_load(void)
{
    if (curlso_state != CURLSO_UNLOADED)
        return curlso_state == CURLSO_LOADED ? 0 : -1;
    /* RTLD_LOCAL keeps libcurl's dependencies out of the global namespace;
     * RTLD_NOW finds a missing symbol here rather than in the middle of a
     * transfer. */
    void *so = dlopen(curlso_lib(), RTLD_NOW | RTLD_LOCAL);
    if (!so) {
        curlso_fail(dlerror(), NULL);
        return -1;
    }
    for (size_t i = 0; i < sizeof curlso_syms / sizeof curlso_syms[0]; i++) {
        void *p = dlsym(so, curlso_syms[i].name);
        if (!p) {
            curlso_fail("it has no ", curlso_syms[i].name);
            return -1;
        }
        /* POSIX guarantees a data pointer from dlsym converts to a
         * function pointer; memcpy says so without a cast ISO C lacks. */
        memcpy((char *)&curlso_fns + curlso_syms[i].offset, &p, sizeof p);
    }
    CURLcode rc = curlso_fns.global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) {
        curlso_fail("curl_global_init: ", curlso_fns.easy_strerror(rc));
        return -1;
    }
    /* The library stays mapped for the life of the process (see
     * curlso_cleanup), so the handle is deliberately not kept. */
    curlso_state = CURLSO_LOADED;
    return 0;
}

bool curlso_loaded(void)
{
    return curlso_state == CURLSO_LOADED;
}

void curlso_cleanup(void)
{
    if (curlso_state == CURLSO_LOADED)
        curlso_fns.global_cleanup();
}

/* Deliberately no curl_global_init() or curl_global_cleanup(): the load
 * runs the one, curlso_cleanup() the other, and a call to either would
 * fail to link rather than map libcurl for nothing. */

const char *curlso_version(void)
{
    return curlso_loaded() ? curlso_fns.version() : NULL;
}

/* Constructors: load on first use, NULL when libcurl is not there. */

CURL *curl_easy_init(void)
{
    return curlso_load() == 0 ? curlso_fns.easy_init() : NULL;
}

CURLM *curl_multi_init(void)
{
    return curlso_load() == 0 ? curlso_fns.multi_init() : NULL;
}

CURLSH *curl_share_init(void)
{
    return curlso_load() == 0 ? curlso_fns.share_init() : NULL;
}

struct curl_slist *curl_slist_append(struct curl_slist *list, const char *data)
{
    return curlso_load() == 0 ? curlso_fns.slist_append(list, data) : NULL;
}

/* Everything else needs a handle or a list that only a loaded libcurl can
 * have made, so these never load; without libcurl they do nothing and
 * report the error the call's type allows. */

const char *curl_easy_strerror(CURLcode code)
{
    return curlso_loaded() ? curlso_fns.easy_strerror(code) : "libcurl not loaded";
}

void curl_slist_free_all(struct curl_slist *list)
{
    if (curlso_loaded())
        curlso_fns.slist_free_all(list);
}

void curl_easy_cleanup(CURL *curl)
{
    if (curlso_loaded())
        curlso_fns.easy_cleanup(curl);
}

void curl_easy_reset(CURL *curl)
{
    if (curlso_loaded())
        curlso_fns.easy_reset(curl);
}

CURLcode curl_easy_pause(CURL *handle, int bitmask)
{
    return curlso_loaded() ? curlso_fns.easy_pause(handle, bitmask) : CURLE_FAILED_INIT;
}

CURLcode curl_easy_setopt(CURL *curl, CURLoption option, ...)
{
    if (!curlso_loaded())
        return CURLE_FAILED_INIT;
    CURLcode rc;
    va_list ap;
    va_start(ap, option);
    if (option < CURLOPTTYPE_OBJECTPOINT)
        rc = curlso_fns.easy_setopt(curl, option, va_arg(ap, long));
    else if (option < CURLOPTTYPE_FUNCTIONPOINT)
        rc = curlso_fns.easy_setopt(curl, option, va_arg(ap, void *));
    else if (option < CURLOPTTYPE_OFF_T)
        rc = curlso_fns.easy_setopt(curl, option, va_arg(ap, curlso_fn));
    else if (option < CURLOPTTYPE_BLOB)
        rc = curlso_fns.easy_setopt(curl, option, va_arg(ap, curl_off_t));
    else
        rc = curlso_fns.easy_setopt(curl, option, va_arg(ap, struct curl_blob *));
    va_end(ap);
    return rc;
}

CURLcode curl_easy_getinfo(CURL *curl, CURLINFO info, ...)
{
    if (!curlso_loaded())
        return CURLE_FAILED_INIT;
    /* CURLINFO_STRING, LONG, DOUBLE, SLIST/PTR, SOCKET and OFF_T are all
     * answered through a pointer the caller passes. */
    va_list ap;
    va_start(ap, info);
    CURLcode rc = curlso_fns.easy_getinfo(curl, info, va_arg(ap, void *));
    va_end(ap);
    return rc;
}

CURLMcode curl_multi_cleanup(CURLM *multi)
{
    return curlso_loaded() ? curlso_fns.multi_cleanup(multi) : CURLM_BAD_HANDLE;
}

CURLMcode curl_multi_setopt(CURLM *multi, CURLMoption option, ...)
{
    if (!curlso_loaded())
        return CURLM_BAD_HANDLE;
    CURLMcode rc;
    va_list ap;
    va_start(ap, option);
    if (option < CURLOPTTYPE_OBJECTPOINT)
        rc = curlso_fns.multi_setopt(multi, option, va_arg(ap, long));
    else if (option < CURLOPTTYPE_FUNCTIONPOINT)
        rc = curlso_fns.multi_setopt(multi, option, va_arg(ap, void *));
    else if (option < CURLOPTTYPE_OFF_T)
        rc = curlso_fns.multi_setopt(multi, option, va_arg(ap, curlso_fn));
    else if (option < CURLOPTTYPE_BLOB)
        rc = curlso_fns.multi_setopt(multi, option, va_arg(ap, curl_off_t));
    else
        rc = CURLM_UNKNOWN_OPTION;
    va_end(ap);
    return rc;
}

CURLMcode curl_multi_add_handle(CURLM *multi, CURL *curl)
{
    return curlso_loaded() ? curlso_fns.multi_add_handle(multi, curl) : CURLM_BAD_HANDLE;
}

CURLMcode curl_multi_remove_handle(CURLM *multi, CURL *curl)
{
    return curlso_loaded() ? curlso_fns.multi_remove_handle(multi, curl) : CURLM_BAD_HANDLE;
}

CURLMcode curl_multi_assign(CURLM *multi, curl_socket_t sockfd, void *sockp)
{
    return curlso_loaded() ? curlso_fns.multi_assign(multi, sockfd, sockp) : CURLM_BAD_HANDLE;
}

CURLMcode curl_multi_socket_action(CURLM *multi, curl_socket_t s, int ev_bitmask,
                                   int *running_handles)
{
    if (curlso_loaded())
        return curlso_fns.multi_socket_action(multi, s, ev_bitmask, running_handles);
    if (running_handles)
        *running_handles = 0;
    return CURLM_BAD_HANDLE;
}

CURLMsg *curl_multi_info_read(CURLM *multi, int *msgs_in_queue)
{
    if (curlso_loaded())
        return curlso_fns.multi_info_read(multi, msgs_in_queue);
    if (msgs_in_queue)
        *msgs_in_queue = 0;
    return NULL;
}

CURLSHcode curl_share_cleanup(CURLSH *share)
{
    return curlso_loaded() ? curlso_fns.share_cleanup(share) : CURLSHE_INVALID;
}

CURLSHcode curl_share_setopt(CURLSH *share, CURLSHoption option, ...)
{
    if (!curlso_loaded())
        return CURLSHE_INVALID;
    CURLSHcode rc;
    va_list ap;
    va_start(ap, option);
    switch (option) {
    case CURLSHOPT_SHARE:
    case CURLSHOPT_UNSHARE:
        rc = curlso_fns.share_setopt(share, option, va_arg(ap, int)); /* curl_lock_data */
        break;
    case CURLSHOPT_LOCKFUNC:
    case CURLSHOPT_UNLOCKFUNC:
        rc = curlso_fns.share_setopt(share, option, va_arg(ap, curlso_fn));
        break;
    case CURLSHOPT_USERDATA: rc = curlso_fns.share_setopt(share, option, va_arg(ap, void *)); break;
    default: rc = CURLSHE_BAD_OPTION; break;
    }
    va_end(ap);
    return rc;
}
