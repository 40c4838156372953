/*
 * config_file: config_load(), the one part of the configuration loader
 * that touches a file.  It reads the file whole and hands the text to
 * config_load_string() (config.c), which does no I/O.  See config.h.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* A configuration file is a few kilobytes; anything bigger is a wrong path. */
#define CONFIG_MAX_FILE (4 * 1024 * 1024)

int config_load(const char *path, struct config **out, char **errors)
{
    struct buf b;
    int rc = -1;

    *out = NULL;
    if (errors)
        *errors = NULL;
    buf_init(&b, CONFIG_MAX_FILE);
    switch (buf_read_file(&b, path)) {
    case 0:
        rc = config_load_string(path, b.data, b.len, out, errors);
        if (rc == 0 && config_check_files(path, *out, errors) != 0) {
            config_free(*out);
            *out = NULL;
            rc = -1;
        }
        break;
    case -2:
        if (errors)
            *errors = xasprintf("%s: file is larger than %d bytes; is this the right "
                                "config file?\n",
                                path, CONFIG_MAX_FILE);
        break;
    default:
        if (errors)
            *errors = xasprintf("%s: cannot read: %s; check the path given with --config\n", path,
                                strerror(errno));
        break;
    }
    buf_release(&b);
    return rc;
}

int config_check_files(const char *path, const struct config *cfg, char **errors)
{
    struct buf out;
    buf_init(&out, SIZE_MAX);
    for (size_t g = 0; g < cfg->n_groups; g++) {
        for (size_t e = 0; e < cfg->groups[g].n_endpoints; e++) {
            const struct cfg_endpoint *ep = &cfg->groups[g].endpoints[e];
            if (!ep->ca_file)
                continue;
            /* stat() and access() never open the file: a FIFO named here
             * cannot hold up the loop that runs a reload. */
            struct stat sb;
            const char *why = NULL;
            if (stat(ep->ca_file, &sb) != 0 || access(ep->ca_file, R_OK) != 0)
                why = strerror(errno);
            else if (!S_ISREG(sb.st_mode))
                why = "not a regular file";
            if (why)
                buf_appendf(&out,
                            "%s:%d: groups[%zu].endpoints[%zu].ca_file: cannot read %s: %s; "
                            "give the path of a PEM file with the CA certificates that sign "
                            "the endpoint's certificate\n",
                            path, ep->line, g, e, ep->ca_file, why);
        }
    }
    if (!out.len) {
        buf_release(&out);
        return 0;
    }
    if (errors) {
        char *prev = *errors;
        *errors = xasprintf("%s%s", prev ? prev : "", out.data);
        free(prev);
    }
    buf_release(&out);
    return -1;
}
