#include "table.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GAP 3

struct cvmctl_table {
        size_t ncols, nrows, cap;
        char **cells; /* Row-major; row 0 is the header. */
        size_t *width;
        bool *right;
        bool oom;
};

cvmctl_table *cvmctl_table_new(const char *const *columns) {
        cvmctl_table *t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        while (columns[t->ncols])
                t->ncols++;
        t->width = calloc(t->ncols ? t->ncols : 1, sizeof(*t->width));
        t->right = calloc(t->ncols ? t->ncols : 1, sizeof(*t->right));
        if (!t->width || !t->right) {
                cvmctl_table_free(t);
                return NULL;
        }
        cvmctl_table_row(t, columns);
        if (t->oom) {
                cvmctl_table_free(t);
                return NULL;
        }
        return t;
}

void cvmctl_table_free(cvmctl_table *t) {
        if (!t)
                return;
        for (size_t i = 0; i < t->nrows * t->ncols; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t->width);
        free(t->right);
        free(t);
}

void cvmctl_table_row(cvmctl_table *t, const char *const *cells) {
        if (t->oom)
                return;
        if (t->nrows == t->cap) {
                size_t cap = t->cap ? t->cap * 2 : 16;
                char **c = realloc(t->cells, cap * t->ncols * sizeof(*c));
                if (!c) {
                        t->oom = true;
                        return;
                }
                t->cells = c;
                t->cap = cap;
        }
        char **row = t->cells + t->nrows * t->ncols;
        for (size_t i = 0; i < t->ncols; i++) {
                row[i] = strdup(cells[i] ? cells[i] : "-");
                if (!row[i]) {
                        /* Keep the table consistent: the row is dropped whole. */
                        while (i--)
                                free(row[i]);
                        t->oom = true;
                        return;
                }
                size_t w = strlen(row[i]);
                if (w > t->width[i])
                        t->width[i] = w;
        }
        t->nrows++;
}

void cvmctl_table_align_right(cvmctl_table *t, size_t column) {
        if (column < t->ncols)
                t->right[column] = true;
}

size_t cvmctl_table_rows(const cvmctl_table *t) {
        return t->nrows ? t->nrows - 1 : 0;
}

void cvmctl_table_print(const cvmctl_table *t, FILE *f, int width) {
        size_t max = width > 0 ? (size_t)width : SIZE_MAX;
        char *line = malloc(4096);
        if (!line)
                return;
        for (size_t r = 0; r < t->nrows; r++) {
                size_t o = 0;
                for (size_t c = 0; c < t->ncols; c++) {
                        const char *cell = t->cells[r * t->ncols + c];
                        size_t len = strlen(cell), w = t->width[c];
                        /* The last column is not padded: no trailing blanks. */
                        size_t pad = c + 1 < t->ncols || t->right[c] ? w - len : 0;
                        int n = snprintf(
                                line + o, 4096 - o, "%*s%s%*s", (int)(t->right[c] ? pad : 0), "",
                                cell, (int)(t->right[c] ? 0 : pad) + (c + 1 < t->ncols ? GAP : 0),
                                "");
                        if (n < 0 || (size_t)n >= 4096 - o) {
                                o = 4095;
                                break;
                        }
                        o += (size_t)n;
                }
                if (o > max)
                        o = max;
                line[o] = '\0';
                fprintf(f, "%s\n", line);
        }
        free(line);
}
