#include "path.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *cvm_path_shipped(const char *installed, const char *built) {
        char exe[PATH_MAX], path[PATH_MAX + 64];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
                return strdup(built);
        exe[n] = '\0';
        *strrchr(exe, '/') = '\0';
        snprintf(path, sizeof(path), "%s/%s", exe, installed);
        if (access(path, F_OK) == 0)
                return realpath(path, NULL);
        snprintf(path, sizeof(path), "%s/%s", exe, built);
        return strdup(path);
}
