/*
 * Time-of-day conditions (a klaxon extension to Sigma): does an event's own time fall in a
 * window of local time in an IANA zone, on given weekdays? DST-correct because the local
 * time is computed per event from the zone's rules (klaxon/tz.h), never from process TZ.
 *
 * YAML form (the body of a detection search identifier, see docs/rules.md):
 *     office_hours:
 *       timeofday:
 *         timezone: Europe/Madrid     # IANA name; required
 *         days: [mon-fri]             # names or ranges (mon..sun); default all days
 *         from: "08:00"               # HH:MM local, inclusive
 *         to: "19:00"                 # HH:MM local, exclusive; to < from crosses midnight
 * A window that crosses midnight belongs to the day it starts on: 22:00-06:00 on [fri]
 * covers Friday 22:00 to Saturday 06:00.
 *
 * Ownership: kx_timeofday_parse returns a new object (caller destroys with
 * kx_timeofday_destroy); its zone is borrowed from the tz cache.
 */
#ifndef KLAXON_TIMEOFDAY_H
#define KLAXON_TIMEOFDAY_H

#include <stdbool.h>
#include <stdint.h>

#include "klaxon/common.h"
#include "klaxon/yaml.h"

typedef struct kx_timeofday kx_timeofday;

/* node is the map under `timeofday:`. Errors are reported at the offending node. */
int kx_timeofday_parse(const kx_yaml_node *node, const char *file, kx_timeofday **out, kx_err *err);
void kx_timeofday_destroy(kx_timeofday *t);
bool kx_timeofday_match(const kx_timeofday *t, int64_t time_ms);
/* The window's IANA zone name ("Europe/Madrid"). */
const char *kx_timeofday_zone(const kx_timeofday *t);
/* time_ms as local time in zone, RFC 3339 with its offset ("2026-03-13T11:00:00+01:00"),
 * into out (>= 32 bytes). -ENOENT for an unknown zone. */
int kx_local_time_format(const char *zone, int64_t time_ms, char *out, size_t outlen);

#endif
