/*
 * config_file: config_load(), the one part of the configuration loader
 * that touches a file.  It reads the file whole and hands the text to
 * config_load_string() (config.c), which does no I/O.  See config.h.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
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
    case 0: rc = config_load_string(path, b.data, b.len, out, errors); break;
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

int config_file_check(const char *path, char *why, size_t len)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || access(path, R_OK) != 0) {
        snprintf(why, len, "%s", strerror(errno));
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(why, len, "not a regular file");
        return -1;
    }
    return 0;
}
