/* The daemon's configuration: defaults, then the JSON config file, then
 * command-line flags. Every key is validated; an unknown key or a bad value
 * is an error that names it. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "log.h"

#define CVM_CONFIG_MAX_LISTEN 16
#define CVM_CONFIG_DEFAULT_PATH "/etc/cvmd/cvmd.json"

typedef struct cvm_config {
        char *listen[CVM_CONFIG_MAX_LISTEN]; /* "unix:PATH" or "tcp:HOST:PORT". */
        size_t n_listen;
        char *state_dir;
        char *db_path; /* NULL: state_dir/cvmd.db. */
        char *host;    /* "sim" or "libvirt". */
        cvm_log_level log_level;
        uint32_t socket_mode; /* File mode of Unix sockets the daemon creates. */
        struct {
                uint64_t max_body_bytes;
                uint32_t max_connections;
                uint32_t connection_timeout_s;
        } http;
        uint32_t shutdown_grace_ms;
        struct {
                uint32_t queue_capacity;
                uint32_t batch_max;
                uint32_t linger_ms;
        } store;
        /* Unparsed sections that later modules own ("psp", "sim", ...). */
        json_t *sections;
} cvm_config;

/* Fills in defaults; the environment supplies the systemd directories. */
int cvm_config_init(cvm_config *cfg, cvm_error *err);
void cvm_config_done(cvm_config *cfg);

/* Applies a parsed JSON object over cfg. On error cfg is unchanged. */
int cvm_config_apply_json(cvm_config *cfg, json_t *obj, cvm_error *err);
/* Reads and applies a config file; a missing file is not an error when missing_ok. */
int cvm_config_load_file(cvm_config *cfg, const char *path, bool missing_ok, cvm_error *err);

/* Setters used by command-line flags; they validate like the file does. */
int cvm_config_set_listen(cvm_config *cfg, char *const *addrs, size_t n, cvm_error *err);
int cvm_config_set_string(char **field, const char *value, cvm_error *err);
int cvm_config_validate_host(const char *host, cvm_error *err);
int cvm_config_validate_listen(const char *addr, cvm_error *err);

/* The database path: db_path, or state_dir/cvmd.db. Caller frees. */
char *cvm_config_db_path(const cvm_config *cfg);

/* The effective configuration as JSON (for --check-config and the API). */
json_t *cvm_config_to_json(const cvm_config *cfg);
