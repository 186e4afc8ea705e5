/* Aligned text tables, as kubectl prints them: a header row in capitals,
 * columns padded to their widest cell, separated by three spaces. */
#pragma once

#include <stdio.h>

typedef struct cvmctl_table cvmctl_table;

/* NULL-terminated column names. Returns NULL when out of memory. */
cvmctl_table *cvmctl_table_new(const char *const *columns);
void cvmctl_table_free(cvmctl_table *t);
/* Adds a row of as many cells as columns (NULL prints "-"); cells are copied. */
void cvmctl_table_row(cvmctl_table *t, const char *const *cells);
/* Sets a column right-aligned (numbers). */
void cvmctl_table_align_right(cvmctl_table *t, size_t column);
size_t cvmctl_table_rows(const cvmctl_table *t);
/* Prints the table; lines are cut at width columns when width > 0. */
void cvmctl_table_print(const cvmctl_table *t, FILE *f, int width);
