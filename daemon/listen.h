/* Listening sockets: "unix:PATH", "tcp:HOST:PORT", and sockets passed by
 * systemd socket activation. Every fd is O_CLOEXEC and non-blocking. */
#pragma once

#include <stdint.h>

#include "error.h"

/* Creates, binds and listens. A stale Unix socket (nobody answering) is
 * replaced; a live one is an error. mode applies to Unix sockets. */
int cvm_listen_open(const char *addr, uint32_t mode, int *ret_fd, cvm_error *err);

/* The sockets systemd passed (LISTEN_FDS), made non-blocking. Returns the
 * count (0 when not socket-activated); fds receives at most max. */
int cvm_listen_systemd(int *fds, int max, cvm_error *err);
