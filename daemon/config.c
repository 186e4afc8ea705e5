#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "json.h"

/* Sections owned by other modules: kept as JSON and validated by them. */
static const char *const module_sections[] = {"image",     "psp",  "sim",    "libvirt", "pool",
                                              "functions", "auth", "policy", NULL};

static char *first_dir(const char *env) {
        /* systemd passes colon-separated lists; the first entry is ours. */
        const char *v = getenv(env);
        if (!v || !*v)
                return NULL;
        return strndup(v, strcspn(v, ":"));
}

int cvm_config_init(cvm_config *cfg, cvm_error *err) {
        *cfg = (cvm_config){
                .log_level = CVM_LOG_INFO,
                .socket_mode = 0660,
                .http = {.max_body_bytes = 8 << 20,
                         .max_connections = 1024,
                         .connection_timeout_s = 60},
                .shutdown_grace_ms = 10000,
                .store = {.queue_capacity = 65536, .batch_max = 512, .linger_ms = 50},
        };
        _cleanup_free_ char *state = first_dir("STATE_DIRECTORY");
        _cleanup_free_ char *runtime = first_dir("RUNTIME_DIRECTORY");
        char sock[4096];
        snprintf(sock, sizeof(sock), "unix:%s/cvmd.sock", runtime ? runtime : "/run/cvmd");
        cfg->state_dir = strdup(state ? state : "/var/lib/cvmd");
        cfg->host = strdup("sim");
        cfg->listen[0] = strdup(sock);
        cfg->n_listen = 1;
        cfg->sections = json_object();
        if (!cfg->state_dir || !cfg->host || !cfg->listen[0] || !cfg->sections) {
                cvm_config_done(cfg);
                return cvm_error_set(err, -ENOMEM, "out of memory");
        }
        return 0;
}

static void free_listen(cvm_config *cfg) {
        for (size_t i = 0; i < cfg->n_listen; i++)
                free(cfg->listen[i]);
        cfg->n_listen = 0;
}

void cvm_config_done(cvm_config *cfg) {
        if (!cfg)
                return;
        free_listen(cfg);
        free(cfg->state_dir);
        free(cfg->db_path);
        free(cfg->host);
        json_decref(cfg->sections);
        *cfg = (cvm_config){0};
}

int cvm_config_validate_host(const char *host, cvm_error *err) {
        if (strcmp(host, "sim") == 0 || strcmp(host, "libvirt") == 0)
                return 0;
        return cvm_error_set(err, -EINVAL, "unknown host %s: expected \"sim\" or \"libvirt\"",
                             CVM_QUOTE(host));
}

int cvm_config_validate_listen(const char *addr, cvm_error *err) {
        if (strncmp(addr, "unix:", 5) == 0) {
                size_t len = strlen(addr + 5);
                /* sun_path holds 108 bytes including the NUL. */
                if (len == 0 || len > 107)
                        return cvm_error_set(err, -EINVAL,
                                             "listen address %s: the socket path must be 1 to "
                                             "107 bytes long",
                                             CVM_QUOTE(addr));
                return 0;
        }
        if (strncmp(addr, "tcp:", 4) == 0) {
                const char *colon = strrchr(addr + 4, ':');
                char *end;
                if (colon && colon > addr + 4) {
                        long port = strtol(colon + 1, &end, 10);
                        if (*end == '\0' && colon[1] && port >= 0 && port <= 65535)
                                return 0;
                }
                return cvm_error_set(err, -EINVAL,
                                     "listen address %s: expected tcp:HOST:PORT (port 0-65535)",
                                     CVM_QUOTE(addr));
        }
        return cvm_error_set(err, -EINVAL, "listen address %s: expected unix:PATH or tcp:HOST:PORT",
                             CVM_QUOTE(addr));
}

int cvm_config_set_listen(cvm_config *cfg, char *const *addrs, size_t n, cvm_error *err) {
        if (n > CVM_CONFIG_MAX_LISTEN)
                return cvm_error_set(err, -EINVAL, "at most %d listen addresses are allowed",
                                     CVM_CONFIG_MAX_LISTEN);
        char *copies[CVM_CONFIG_MAX_LISTEN] = {0};
        for (size_t i = 0; i < n; i++) {
                int r = cvm_config_validate_listen(addrs[i], err);
                for (size_t j = 0; r >= 0 && j < i; j++)
                        if (strcmp(addrs[i], addrs[j]) == 0)
                                r = cvm_error_set(err, -EINVAL, "listen address %s is given twice",
                                                  CVM_QUOTE(addrs[i]));
                if (r >= 0 && !(copies[i] = strdup(addrs[i])))
                        r = cvm_error_set(err, -ENOMEM, "out of memory");
                if (r < 0) {
                        for (size_t j = 0; j < i; j++)
                                free(copies[j]);
                        return r;
                }
        }
        free_listen(cfg);
        memcpy(cfg->listen, copies, n * sizeof(char *));
        cfg->n_listen = n;
        return 0;
}

int cvm_config_set_string(char **field, const char *value, cvm_error *err) {
        char *copy = strdup(value);
        if (!copy)
                return cvm_error_set(err, -ENOMEM, "out of memory");
        free(*field);
        *field = copy;
        return 0;
}

static const char *const core_fields[] = {"listen",    "state_dir",   "db",   "host",
                                          "log_level", "socket_mode", "http", "shutdown_grace_ms",
                                          "store",     NULL};

/* Top-level keys: the core's and the sections other modules own. */
static int check_top_fields(json_t *obj, cvm_error *err) {
        const char *key;
        json_t *value;
        json_object_foreach(obj, key, value) {
                bool ok = false;
                for (const char *const *f = core_fields; *f && !ok; f++)
                        ok = strcmp(*f, key) == 0;
                for (const char *const *f = module_sections; *f && !ok; f++)
                        ok = strcmp(*f, key) == 0;
                if (!ok)
                        return cvm_error_set(err, -EINVAL, "unknown field '%s'", key);
        }
        return 0;
}

static const char *const http_fields[] = {"max_body_bytes", "max_connections",
                                          "connection_timeout_s", NULL};
static const char *const store_fields[] = {"queue_capacity", "batch_max", "linger_ms", NULL};

/* Validates obj into a scratch copy of cfg so that a bad file changes nothing. */
int cvm_config_apply_json(cvm_config *cfg, json_t *obj, cvm_error *err) {
        int r = check_top_fields(obj, err);
        if (r < 0)
                return r;

        cvm_config n = *cfg;
        const char *s = NULL;
        int64_t i;
        json_t *sub, *listen = json_object_get(obj, "listen");
        char *addrs[CVM_CONFIG_MAX_LISTEN];
        size_t n_addrs = 0;

        if (listen) {
                if (!json_is_array(listen))
                        return cvm_error_set(err, -EINVAL,
                                             "field 'listen' must be an array of strings");
                if (json_array_size(listen) > CVM_CONFIG_MAX_LISTEN)
                        return cvm_error_set(err, -EINVAL,
                                             "field 'listen' holds at most %d addresses",
                                             CVM_CONFIG_MAX_LISTEN);
                size_t k;
                json_t *v;
                json_array_foreach(listen, k, v) {
                        if (!json_is_string(v))
                                return cvm_error_set(err, -EINVAL,
                                                     "field 'listen[%zu]' must be a string", k);
                        r = cvm_config_validate_listen(json_string_value(v), err);
                        if (r < 0)
                                return cvm_error_prefix(err, "field 'listen[%zu]': ", k);
                        addrs[n_addrs++] = (char *)json_string_value(v);
                }
                /* A dry run catches duplicates before anything is committed. */
                cvm_config probe = {0};
                r = cvm_config_set_listen(&probe, addrs, n_addrs, err);
                free_listen(&probe);
                if (r < 0)
                        return cvm_error_prefix(err, "field 'listen': ");
        }
        const char *state_dir = NULL, *db = NULL, *host = NULL;
        if ((r = cvm_json_get_string(obj, "", "state_dir", false, &state_dir, err)) < 0 ||
            (r = cvm_json_get_string(obj, "", "db", false, &db, err)) < 0 ||
            (r = cvm_json_get_string(obj, "", "host", false, &host, err)) < 0)
                return r;
        if (state_dir && !*state_dir)
                return cvm_error_set(err, -EINVAL, "field 'state_dir' must not be empty");
        if (db && !*db)
                return cvm_error_set(err, -EINVAL, "field 'db' must not be empty");
        if (host && (r = cvm_config_validate_host(host, err)) < 0)
                return cvm_error_prefix(err, "field 'host': ");
        if ((r = cvm_json_get_string(obj, "", "log_level", false, &s, err)) < 0)
                return r;
        if (s && cvm_log_level_from_string(s, &n.log_level) < 0)
                return cvm_error_set(err, -EINVAL,
                                     "field 'log_level' must be one of error, warn, info, debug");
        s = NULL;
        if ((r = cvm_json_get_string(obj, "", "socket_mode", false, &s, err)) < 0)
                return r;
        if (s) {
                /* JSON has no octal numbers: the mode is a string such as "0660". */
                char *end;
                unsigned long m = strtoul(s, &end, 8);
                if (!*s || *end || m > 0777)
                        return cvm_error_set(err, -EINVAL,
                                             "field 'socket_mode' must be an octal mode string "
                                             "such as \"0660\"");
                n.socket_mode = (uint32_t)m;
        }
        i = n.shutdown_grace_ms;
        if ((r = cvm_json_get_int(obj, "", "shutdown_grace_ms", false, 0, 600000, &i, err)) < 0)
                return r;
        n.shutdown_grace_ms = (uint32_t)i;

        if ((r = cvm_json_get_object(obj, "", "http", false, &sub, err)) < 0)
                return r;
        if (sub) {
                if ((r = cvm_json_check_fields(sub, "http", http_fields, err)) < 0)
                        return r;
                i = (int64_t)n.http.max_body_bytes;
                if ((r = cvm_json_get_int(sub, "http", "max_body_bytes", false, 1024,
                                          INT64_C(1) << 30, &i, err)) < 0)
                        return r;
                n.http.max_body_bytes = (uint64_t)i;
                i = n.http.max_connections;
                if ((r = cvm_json_get_int(sub, "http", "max_connections", false, 1, 65536, &i,
                                          err)) < 0)
                        return r;
                n.http.max_connections = (uint32_t)i;
                i = n.http.connection_timeout_s;
                if ((r = cvm_json_get_int(sub, "http", "connection_timeout_s", false, 1, 86400, &i,
                                          err)) < 0)
                        return r;
                n.http.connection_timeout_s = (uint32_t)i;
        }
        if ((r = cvm_json_get_object(obj, "", "store", false, &sub, err)) < 0)
                return r;
        if (sub) {
                if ((r = cvm_json_check_fields(sub, "store", store_fields, err)) < 0)
                        return r;
                i = n.store.queue_capacity;
                if ((r = cvm_json_get_int(sub, "store", "queue_capacity", false, 16, 1 << 24, &i,
                                          err)) < 0)
                        return r;
                n.store.queue_capacity = (uint32_t)i;
                i = n.store.batch_max;
                if ((r = cvm_json_get_int(sub, "store", "batch_max", false, 1, 65536, &i, err)) < 0)
                        return r;
                n.store.batch_max = (uint32_t)i;
                i = n.store.linger_ms;
                if ((r = cvm_json_get_int(sub, "store", "linger_ms", false, 1, 10000, &i, err)) < 0)
                        return r;
                n.store.linger_ms = (uint32_t)i;
        }
        for (const char *const *m = module_sections; *m; m++)
                if ((r = cvm_json_get_object(obj, "", *m, false, &sub, err)) < 0)
                        return r;

        /* Everything is valid: commit, allocating before touching cfg. */
        _cleanup_free_ char *state_copy = state_dir ? strdup(state_dir) : NULL;
        _cleanup_free_ char *db_copy = db ? strdup(db) : NULL;
        _cleanup_free_ char *host_copy = host ? strdup(host) : NULL;
        if ((state_dir && !state_copy) || (db && !db_copy) || (host && !host_copy))
                return cvm_error_set(err, -ENOMEM, "out of memory");
        if (listen && (r = cvm_config_set_listen(&n, addrs, n_addrs, err)) < 0)
                return r;
        if (state_copy) {
                free(n.state_dir);
                n.state_dir = CVM_TAKE_PTR(state_copy);
        }
        if (db_copy) {
                free(n.db_path);
                n.db_path = CVM_TAKE_PTR(db_copy);
        }
        if (host_copy) {
                free(n.host);
                n.host = CVM_TAKE_PTR(host_copy);
        }
        for (const char *const *m = module_sections; *m; m++) {
                json_t *section = json_object_get(obj, *m);
                if (section)
                        json_object_set(n.sections, *m, section);
        }
        *cfg = n;
        return 0;
}

int cvm_config_load_file(cvm_config *cfg, const char *path, bool missing_ok, cvm_error *err) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f) {
                if (errno == ENOENT && missing_ok)
                        return 0;
                return cvm_error_set_errno(err, -errno, "config %s", CVM_QUOTE(path));
        }
        /* A config file is small; refuse anything absurd rather than read it. */
        char buf[1 << 20];
        size_t len = fread(buf, 1, sizeof(buf), f);
        if (ferror(f))
                return cvm_error_set_errno(err, -EIO, "config %s", CVM_QUOTE(path));
        if (len == sizeof(buf))
                return cvm_error_set(err, -EFBIG, "config %s is larger than 1 MiB",
                                     CVM_QUOTE(path));
        json_auto_t *obj = NULL;
        int r = cvm_json_parse_object(buf, len, &obj, err);
        if (r >= 0)
                r = cvm_config_apply_json(cfg, obj, err);
        if (r < 0)
                return cvm_error_prefix(err, "config %s: ", CVM_QUOTE(path));
        return 0;
}

char *cvm_config_db_path(const cvm_config *cfg) {
        if (cfg->db_path)
                return strdup(cfg->db_path);
        char *p;
        if (asprintf(&p, "%s/cvmd.db", cfg->state_dir) < 0)
                return NULL;
        return p;
}

json_t *cvm_config_to_json(const cvm_config *cfg) {
        json_t *listen = json_array();
        for (size_t i = 0; i < cfg->n_listen; i++)
                json_array_append_new(listen, json_string(cfg->listen[i]));
        _cleanup_free_ char *db = cvm_config_db_path(cfg);
        char mode[8];
        snprintf(mode, sizeof(mode), "%04o", (unsigned)cfg->socket_mode);
        json_t *o = json_pack(
                "{s:o, s:s, s:s?, s:s, s:s, s:s, s:{s:I, s:i, s:i}, s:i, s:{s:i, s:i, s:i}}",
                "listen", listen, "state_dir", cfg->state_dir, "db", db, "host", cfg->host,
                "log_level", cvm_log_level_to_string(cfg->log_level), "socket_mode", mode, "http",
                "max_body_bytes", (json_int_t)cfg->http.max_body_bytes, "max_connections",
                (int)cfg->http.max_connections, "connection_timeout_s",
                (int)cfg->http.connection_timeout_s, "shutdown_grace_ms",
                (int)cfg->shutdown_grace_ms, "store", "queue_capacity",
                (int)cfg->store.queue_capacity, "batch_max", (int)cfg->store.batch_max, "linger_ms",
                (int)cfg->store.linger_ms);
        if (o)
                json_object_update(o, cfg->sections);
        return o;
}
