#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"

int cvm_file_read(const char *path, size_t max, uint8_t **ret, size_t *ret_len, mode_t *ret_mode,
                  cvm_error *err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return cvm_error_set_errno(err, -errno, "%s", path);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return cvm_error_set_errno(err, -errno, "%s", path);
        if (!S_ISREG(st.st_mode))
                return cvm_error_set(err, -EINVAL, "%s is not a regular file", path);
        if ((uint64_t)st.st_size > max)
                return cvm_error_set(err, -EINVAL, "%s is %lld bytes, more than %zu", path,
                                     (long long)st.st_size, max);
        _cleanup_free_ uint8_t *buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return cvm_error_set(err, -ENOMEM, "%s: out of memory", path);
        /* One byte more than fstat said, to notice a file that grows. */
        size_t len = 0;
        for (;;) {
                ssize_t n = read(fd, buf + len, (size_t)st.st_size + 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return cvm_error_set_errno(err, -errno, "reading %s", path);
                if (n == 0)
                        break;
                len += (size_t)n;
                if (len > (size_t)st.st_size)
                        return cvm_error_set(err, -EINVAL, "%s grew while being read", path);
        }
        buf[len] = '\0';
        if (ret_mode)
                *ret_mode = st.st_mode;
        *ret_len = len;
        *ret = CVM_TAKE_PTR(buf);
        return 0;
}

int cvm_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                          cvm_error *err) {
        char tmp[PATH_MAX];
        const char *slash = strrchr(path, '/');
        int dir_len = slash ? (int)(slash - path + 1) : 0;
        if ((size_t)snprintf(tmp, sizeof(tmp), "%.*s.%s.tmp", dir_len, path, path + dir_len) >=
            sizeof(tmp))
                return cvm_error_set(err, -ENAMETOOLONG, "%s: path too long", path);
        (void)unlink(tmp);
        _cleanup_close_ int fd =
                open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return cvm_error_set_errno(err, -errno, "creating %s", tmp);
        const uint8_t *p = data;
        size_t done = 0;
        while (done < len) {
                ssize_t n = write(fd, p + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int e = -errno;
                        (void)unlink(tmp);
                        return cvm_error_set_errno(err, e, "writing %s", tmp);
                }
                done += (size_t)n;
        }
        /* The mode given to open() is masked by the umask; the file must end
         * up with mode whatever it is. */
        if (fchmod(fd, mode) < 0 || fsync(fd) < 0 || rename(tmp, path) < 0) {
                int e = -errno;
                (void)unlink(tmp);
                return cvm_error_set_errno(err, e, "writing %s", path);
        }
        return 0;
}
