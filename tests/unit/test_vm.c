/* Random ids: their shape, no repeats across many batches of random bytes,
 * and a buffer too small for one is refused untouched. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "vm.h"

#define IDS 2000

static int cmp_id(const void *a, const void *b) {
        return strcmp(a, b);
}

static void test_random_id_shape(void **state) {
        (void)state;
        char id[CVM_VM_ID_SIZE];
        cvm_error err = {0};
        assert_int_equal(cvm_random_id("vm-", id, sizeof(id), &err), 0);
        assert_int_equal(strlen(id), 3 + 16);
        assert_memory_equal(id, "vm-", 3);
        assert_int_equal(strspn(id + 3, "0123456789abcdef"), 16);
}

static void test_random_id_unique(void **state) {
        (void)state;
        /* Far more ids than one batch of random bytes holds. */
        char(*ids)[32] = calloc(IDS, sizeof(*ids));
        assert_non_null(ids);
        cvm_error err = {0};
        for (size_t i = 0; i < IDS; i++)
                assert_int_equal(cvm_random_id("inv-", ids[i], sizeof(ids[i]), &err), 0);
        qsort(ids, IDS, sizeof(*ids), cmp_id);
        for (size_t i = 1; i < IDS; i++)
                assert_string_not_equal(ids[i - 1], ids[i]);
        free(ids);
}

static void test_random_id_too_small(void **state) {
        (void)state;
        char id[20] = "untouched";
        cvm_error err = {0};
        /* "inv-" + 16 hex + NUL is 21 bytes. */
        assert_int_equal(cvm_random_id("inv-", id, sizeof(id), &err), -ENOBUFS);
        assert_non_null(strstr(err.message, "21 bytes"));
        assert_string_equal(id, "untouched");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_random_id_shape),
                cmocka_unit_test(test_random_id_unique),
                cmocka_unit_test(test_random_id_too_small),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
