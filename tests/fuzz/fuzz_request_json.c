/* libFuzzer target: request bodies as the API parses them (JSON object,
 * duplicate keys refused, field validation), and the same bytes as a
 * config document applied over defaults. */
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        cvm_error err = {0};
        json_t *obj = NULL;
        if (cvm_json_parse_object((const char *)data, size, &obj, &err) < 0)
                return 0;
        static const char *const fields[] = {"level", "name", "n", NULL};
        const char *s = NULL;
        int64_t n = 0;
        bool b = false;
        json_t *sub = NULL;
        cvm_json_check_fields(obj, "", fields, &err);
        cvm_json_get_string(obj, "", "level", false, &s, &err);
        cvm_json_get_int(obj, "", "n", false, INT64_MIN, INT64_MAX, &n, &err);
        cvm_json_get_bool(obj, "", "b", false, &b, &err);
        cvm_json_get_object(obj, "", "http", false, &sub, &err);

        cvm_config cfg;
        if (cvm_config_init(&cfg, &err) == 0) {
                cvm_config_apply_json(&cfg, obj, &err);
                json_t *out = cvm_config_to_json(&cfg);
                json_decref(out);
                cvm_config_done(&cfg);
        }
        json_decref(obj);
        return 0;
}
