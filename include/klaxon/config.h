/*
 * The daemon's configuration file (YAML; reference in docs/config.md). The loader checks
 * the top level and the app's own sections, and keeps the document so each stage parses
 * its own section (kafka -> source, inputs/decode -> decode, alerting -> alert) with
 * file:line:col errors. Paths in the file are relative to the file's directory.
 *
 * Ownership: kx_config_load returns a new config (caller destroys); the YAML nodes it hands
 * out are borrowed from it.
 */
#ifndef KLAXON_CONFIG_H
#define KLAXON_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "klaxon/common.h"
#include "klaxon/log.h"
#include "klaxon/yaml.h"

typedef struct kx_config {
    char *file;        /* as given */
    char **rule_paths; /* resolved against the config's directory */
    size_t nrule_paths;
    /* `decoders`: the decoder content to load (resolved likewise); none given and
     * decoders_given: `decoders: []`, no content; not given: the shipped decoders */
    char **decoder_paths;
    size_t ndecoder_paths;
    bool decoders_given;
    const kx_yaml_node *kafka;   /* may be NULL (replay needs none) */
    const kx_yaml_node **inputs; /* each input map */
    size_t ninputs;
    const char **input_topics;    /* inputs[i]'s topic (NULL when absent) */
    const kx_yaml_node *decode;   /* may be NULL */
    const kx_yaml_node *alerting; /* may be NULL */
    char *store_url;        /* "memory" (default) or "redis://[user:pass@]host:port[/prefix]" */
    char *store_username;   /* state.username (redis ACL user), or NULL */
    char *store_password;   /* state.password(_file), or NULL; a secret */
    size_t state_max_keys;  /* memory backend cap */
    bool state_windows_log; /* state.windows: log (kx_store_redis_use_log) */
    int64_t lateness_ms;    /* added to each window's TTL */
    size_t max_groups;      /* live groups per correlation rule (per process) */
    char *metrics_addr;     /* NULL = no metrics endpoint */
    int metrics_port;
    size_t max_event_bytes; /* larger events are malformed (default 1 MiB) */
    size_t evidence_bytes;  /* cap on one evidence event in an alert (default 16 KiB) */
    kx_log_level log_level;
    int64_t rules_watch_ms; /* check the rule files this often and reload on a change; 0 off */
    kx_yaml_doc *doc;
} kx_config;

int kx_config_load(const char *path, kx_config **out, kx_err *err);
void kx_config_destroy(kx_config *c);

#endif
