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
/* Entry i of a map of settings (librdkafka `properties`): "NAME: value" with ${ENV}
 * expanded, or "NAME_file: PATH" read from the file. *name and *value are malloc'd (free
 * *value with kx_secret_free); *secret says whether the value came from the environment or
 * a file (then errors must not print it). */
int kx_secret_setting(const kx_yaml_node *map, size_t i, const char *file, char **name,
                      char **value, bool *secret, kx_err *err);

#endif
