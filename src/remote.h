/*
 * remote: the terminal dashboard attached to a proxy already running
 * (--dashboard --connect URL).  See remote.c.
 */
#ifndef ZEPHYR_REMOTE_H
#define ZEPHYR_REMOTE_H

/*
 * Runs its own loop against the proxy at url (scheme optional, "/status"
 * optional) until the operator quits; returns the exit code (0, or 1 when
 * there is no terminal to take over).  admin_key (may be NULL) is sent
 * with operations, $ZEPHYR_ACCESS_KEY with every request.
 */
int remote_dashboard_run(const char *url, const char *admin_key);

#endif
