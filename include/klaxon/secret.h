/*
 * Secrets in the config (webhook URLs and tokens, PagerDuty routing keys, HMAC keys): a value
 * may name environment variables, `${NAME}` anywhere in it, or be read from a file with the
 * `KEY_file: PATH` form of its key, so the config itself need not hold it. Errors name the
 * key, the variable or the path, never the value; nothing here logs.
 *
 * Ownership: *out is malloc'd; free it with kx_secret_free, which wipes it first.
 */
#ifndef KLAXON_SECRET_H
#define KLAXON_SECRET_H

#include <stdbool.h>

#include "klaxon/common.h"
#include "klaxon/yaml.h"

/* Reads key (expanding ${NAME}) or key_file (the file's content, trailing newlines cut) from
 * map. Absent: 0 with *out NULL, or an error at map when required. Both given: an error. */
int kx_secret_get(const kx_yaml_node *map, const char *key, const char *file, bool required,
                  char **out, kx_err *err);
void kx_secret_free(char *s);

#endif
