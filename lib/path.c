#include "path.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How far up from the program's directory a build-tree file is looked for:
 * build/asan/cvmctl finds build/guest and the source tree's firmware/tools. */
#define MAX_UP 3

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
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", exe);
        for (int up = 0; up <= MAX_UP; up++) {
                snprintf(path, sizeof(path), "%s/%s", dir, built);
                if (access(path, F_OK) == 0)
                        return realpath(path, NULL);
                char *slash = strrchr(dir, '/');
                if (!slash || slash == dir)
                        break;
                *slash = '\0';
        }
        snprintf(path, sizeof(path), "%s/%s", exe, built);
        return strdup(path);
}
