/*
 * decode: bytes -> kx_event. One kx_decoder per input (a Kafka topic, or a replay input),
 * configured from that input's YAML map plus the config's shared `decode:` section.
 *
 * Formats: JSON objects (a one-pass scanner; nested objects flattened with dots, arrays
 * repeated per element) and syslog (RFC 5424, and RFC 3164 whose missing year and zone are
 * inferred as docs/internals/decode.md describes). Field extractors (PCRE2 named groups on a
 * field, scoped by syslog program) then add fields. Each event gets event time (from the
 * log, the fallback otherwise), tenant and logsource.
 *
 * Ownership: kx_decoder_create returns a new decoder (caller destroys); it copies what it
 * needs from the YAML nodes. kx_decode fills the caller's event, whose strings point into
 * the event's arena or into raw (borrowed). kx_decode allocates nothing per event in steady
 * state (docs/internals/decode.md).
 */
#ifndef KLAXON_DECODE_H
#define KLAXON_DECODE_H

#include <stdint.h>

#include "klaxon/common.h"
#include "klaxon/event.h"
#include "klaxon/yaml.h"

typedef enum { KX_FMT_JSON = 0, KX_FMT_SYSLOG } kx_format;

typedef struct kx_decoder kx_decoder;

/*
 * input: the input's map (keys: format, tenant, tenant_field, time_field, logsource,
 *        syslog {timezone, year}), or NULL for defaults.
 * shared: the config's `decode:` map (keys: extractors, programs), or NULL.
 * format_override: -1 to take the format from input (default json), else a kx_format.
 * file: the config file's name, for errors.
 */
int kx_decoder_create(const kx_yaml_node *input, const kx_yaml_node *shared, int format_override,
                      const char *file, kx_decoder **out, kx_err *err);
void kx_decoder_destroy(kx_decoder *d);
/* Calls cb with each logsource d can give an event: the input's, and each syslog program's
 * (its fields over the input's). Strings borrowed for the call; NULL = not set. */
typedef void (*kx_logsource_cb)(const char *product, const char *service, const char *category,
                                void *ud);
void kx_decoder_logsources(const kx_decoder *d, kx_logsource_cb cb, void *ud);
kx_format kx_decoder_format(const kx_decoder *d);

/*
 * Decodes raw into ev (which the caller has reset). fallback_ms is the event time used when
 * the log carries none (Kafka timestamp; receive time for files); it is also the reference
 * for RFC 3164's missing year. ev->topic/partition/offset are left as the caller set them.
 * Returns 0, or -EINVAL for a malformed event with a short reason in *why (static string).
 * A decoded event may have had parts cut by a limit (ev->limits, event.h): kx_decode counts
 * and logs those (rate-limited, with the origin the caller set), the caller need not.
 */
int kx_decode(kx_decoder *d, const char *raw, size_t len, int64_t fallback_ms, kx_event *ev,
              const char **why);

/* Decoders as content (content.c, docs/sources.md): the files of a decoders/ tree, each
 * document one log source (program, logsource, extractors, fields, samples). Loaded once,
 * every document checked (errors at file:line:col); borrowed by the decoders made with it,
 * so it outlives them. */
typedef struct kx_decoder_set kx_decoder_set;
int kx_decoder_set_load(const char *const *paths, size_t npaths, kx_decoder_set **out, kx_err *err);
void kx_decoder_set_destroy(kx_decoder_set *s);
size_t kx_decoder_set_size(const kx_decoder_set *s);
/* The i-th decoder document (and its file); NULL past the end. */
const kx_yaml_node *kx_decoder_set_at(const kx_decoder_set *s, size_t i, const char **file);
/* Its program names (borrowed scalars); how many. */
size_t kx_decoder_def_programs(const kx_yaml_node *def, const kx_yaml_node *const **out);
/* kx_decoder_create, with a set's decoders added for every program the shared `decode`
 * section does not name (the config adds to the content and overrides it per program). */
int kx_decoder_create_with(const kx_yaml_node *input, const kx_yaml_node *shared,
                           const kx_decoder_set *content, int format_override, const char *file,
                           kx_decoder **out, kx_err *err);

/* Parses RFC 3339 / ISO 8601 timestamps ("2026-03-29T01:30:00Z", "...+02:00", fractions).
 * Returns 0 and ms since the epoch, or -EINVAL. */
int kx_parse_rfc3339(const char *s, size_t len, int64_t *out_ms);
/* A time as an epoch number in text ("1741598405", "1741598405123", "1.7e9"): seconds when
 * |x| < 1e11, else milliseconds (time_field: epoch, and the rules' time-part modifiers).
 * 0, or -EINVAL. */
int kx_parse_epoch(const char *s, size_t len, int64_t *out_ms);

#endif
