#include "listen.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"

#define BACKLOG 511

static int open_unix(const char *path, uint32_t mode, int *ret_fd, cvm_error *err) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return cvm_error_set(err, -ENAMETOOLONG, "socket path %s is too long",
                                     CVM_QUOTE(path));
        strcpy(sa.sun_path, path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return cvm_error_set_errno(err, -errno, "socket");

        struct stat st;
        if (lstat(path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return cvm_error_set(err, -EEXIST,
                                             "%s exists and is not a socket; refusing to replace "
                                             "it",
                                             CVM_QUOTE(path));
                /* Someone answering means another daemon owns it. */
                _cleanup_close_ int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        return cvm_error_set(err, -EADDRINUSE,
                                             "socket %s is in use by another process (is cvmd "
                                             "already running?)",
                                             CVM_QUOTE(path));
                if (unlink(path) < 0)
                        return cvm_error_set_errno(err, -errno, "removing stale socket %s",
                                                   CVM_QUOTE(path));
        }
        /* Bind under a restrictive umask so the socket never exists with wider access. */
        mode_t old = umask(0777 & ~mode);
        int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        int e = errno;
        umask(old);
        if (r < 0)
                return cvm_error_set_errno(err, -e, "bind %s", CVM_QUOTE(path));
        if (chmod(path, mode) < 0)
                return cvm_error_set_errno(err, -errno, "chmod %s", CVM_QUOTE(path));
        if (listen(fd, BACKLOG) < 0)
                return cvm_error_set_errno(err, -errno, "listen %s", CVM_QUOTE(path));
        *ret_fd = CVM_TAKE_FD(fd);
        return 0;
}

static int open_tcp(const char *hostport, int *ret_fd, cvm_error *err) {
        char host[256];
        const char *colon = strrchr(hostport, ':');
        if (!colon || (size_t)(colon - hostport) >= sizeof(host))
                return cvm_error_set(err, -EINVAL, "bad TCP address %s", CVM_QUOTE(hostport));
        memcpy(host, hostport, (size_t)(colon - hostport));
        host[colon - hostport] = '\0';
        /* "[::1]:8080" names an IPv6 host. */
        char *h = host;
        size_t hl = strlen(h);
        if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
                h[hl - 1] = '\0';
                h++;
        }
        struct addrinfo hints = {.ai_family = AF_UNSPEC,
                                 .ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
        struct addrinfo *res = NULL;
        int g = getaddrinfo(*h ? h : NULL, colon + 1, &hints, &res);
        if (g != 0)
                return cvm_error_set(err, -EADDRNOTAVAIL, "cannot resolve %s: %s",
                                     CVM_QUOTE(hostport), gai_strerror(g));
        int r = -EADDRNOTAVAIL, e = 0;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                _cleanup_close_ int fd =
                        socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0) {
                        e = errno;
                        continue;
                }
                int one = 1;
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, BACKLOG) < 0) {
                        e = errno;
                        continue;
                }
                *ret_fd = CVM_TAKE_FD(fd);
                r = 0;
                break;
        }
        freeaddrinfo(res);
        if (r < 0)
                return cvm_error_set_errno(err, e ? -e : r, "listen on tcp:%s", hostport);
        return 0;
}

int cvm_listen_open(const char *addr, uint32_t mode, int *ret_fd, cvm_error *err) {
        if (strncmp(addr, "unix:", 5) == 0)
                return open_unix(addr + 5, mode, ret_fd, err);
        if (strncmp(addr, "tcp:", 4) == 0)
                return open_tcp(addr + 4, ret_fd, err);
        return cvm_error_set(err, -EINVAL, "listen address %s: expected unix:PATH or tcp:HOST:PORT",
                             CVM_QUOTE(addr));
}

int cvm_listen_systemd(int *fds, int max, cvm_error *err) {
        /* sd_listen_fds sets FD_CLOEXEC and clears the variables for our children. */
        int n = sd_listen_fds(1);
        if (n < 0)
                return cvm_error_set_errno(err, n, "sd_listen_fds");
        if (n > max)
                return cvm_error_set(err, -E2BIG,
                                     "systemd passed %d sockets; at most %d are "
                                     "supported",
                                     n, max);
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0)
                        return cvm_error_set(err, -EINVAL,
                                             "passed fd %d is not a listening stream socket", fd);
                int fl = fcntl(fd, F_GETFL);
                if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                        return cvm_error_set_errno(err, -errno, "fcntl on passed fd %d", fd);
                fds[i] = fd;
        }
        return n;
}
