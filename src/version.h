/*
 * version: the release version, on its own so that pure modules (metrics)
 * can name it without including the application's header.
 */
#ifndef ZEPHYR_VERSION_H
#define ZEPHYR_VERSION_H

#define ZEPHYR_VERSION "0.1.0"

#endif
