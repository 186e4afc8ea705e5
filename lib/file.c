#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
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
