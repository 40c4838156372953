/*
 * libFuzzer target for the configuration readers: the input is fed to
 * config_load_string() as a config file and to dotenv_parse() as a .env
 * file.  Whatever the bytes, both must return 0 or -1 with consistent
 * outputs, never crash, leak or read out of bounds; the summary of any
 * accepted config is rendered too.  Seeds: tests/fuzz/corpus/config/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config.h"
#include "dotenv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_on_pair(void *ud, const char *key, const char *value)
{
    size_t *n = ud;
    *n += (key[0] != '\0') + (value[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config *cfg = NULL;
    char *errors = NULL;
    int rc = config_load_string("fuzz.toml", (const char *)data, size, &cfg, &errors);
    if ((rc == 0) != (cfg != NULL) || (rc == 0) != (errors == NULL))
        abort();
    if (cfg) {
        char *summary = config_summary(cfg);
        free(summary);
        (void)config_default_group(cfg);
    }
    config_free(cfg);
    free(errors);

    size_t pairs = 0;
    errors = NULL;
    rc = dotenv_parse((const char *)data, size, fuzz_on_pair, &pairs, "fuzz.env", &errors);
    if ((rc == 0) != (errors == NULL))
        abort();
    free(errors);
    return 0;
}
