/*
 * Text assertions for the cmocka unit tests: assert_has(text, needle) and
 * assert_lacks(text, needle), which print the whole text when they fail.
 * Include after <cmocka.h>.
 */
#ifndef ZEPHYR_TESTS_ASSERT_TEXT_H
#define ZEPHYR_TESTS_ASSERT_TEXT_H

#include <string.h>

static void assert_has_impl(const char *hay, const char *needle, const char *file, int line)
{
    if (!hay || !strstr(hay, needle)) {
        print_error("expected to find [%s] in:\n%s\n", needle, hay ? hay : "(null)");
        _fail(file, line);
    }
}
#define assert_has(hay, needle) assert_has_impl((hay), (needle), __FILE__, __LINE__)

static void assert_lacks_impl(const char *hay, const char *needle, const char *file, int line)
{
    if (hay && strstr(hay, needle)) {
        print_error("did not expect [%s] in:\n%s\n", needle, hay);
        _fail(file, line);
    }
}
#define assert_lacks(hay, needle) assert_lacks_impl((hay), (needle), __FILE__, __LINE__)

#endif
