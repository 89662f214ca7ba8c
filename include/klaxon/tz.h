/*
 * IANA time zones from the system's tzdata (TZif files under /usr/share/zoneinfo, or
 * $TZDIR), read once per zone and cached for the life of the process. Never touches the
 * process's TZ variable or libc's localtime: conversions are pure functions of the zone's
 * transition table and its POSIX TZ footer rule (for instants past the last transition).
 *
 * Ownership: zones returned by kx_tz_get are owned by the cache (borrowed by callers, valid
 * until kx_tz_cache_clear, which tests and shutdown call).
 */
#ifndef KLAXON_TZ_H
#define KLAXON_TZ_H

#include <stdint.h>

#include "klaxon/common.h"

typedef struct kx_tz kx_tz;

typedef struct kx_civil {
    int year;
    int month;          /* 1..12 */
    int day;            /* 1..31 */
    int hour;           /* 0..23 */
    int minute;         /* 0..59 */
    int second;         /* 0..60 */
    int wday;           /* 0 = Sunday .. 6 = Saturday */
    int32_t utc_offset; /* seconds east of UTC in force */
} kx_civil;

/* Loads (or finds in the cache) the zone called name ("UTC", "Europe/Madrid").
 * Returns 0; -ENOENT for an unknown zone or an invalid name (only [A-Za-z0-9_+-/], no
 * leading '/'); -EINVAL for a corrupt or leap-second (right/) file; -ENOMEM, also when the
 * 512-zone cache is full. Loop thread only (the cache is not locked). */
int kx_tz_get(const char *name, const kx_tz **out);
const char *kx_tz_name(const kx_tz *tz);
/* Seconds east of UTC in force at utc_s. */
int32_t kx_tz_offset(const kx_tz *tz, int64_t utc_s);
/* Local civil time at utc_s. */
void kx_tz_local(const kx_tz *tz, int64_t utc_s, kx_civil *out);
/* Local wall time (year..second of *local; wday/utc_offset ignored) to UTC seconds.
 * A time that occurs twice (DST ends) resolves to the earlier instant; a time that does
 * not exist (DST starts) is read with the offset in force before the gap. */
int64_t kx_tz_to_utc(const kx_tz *tz, const kx_civil *local);
void kx_tz_cache_clear(void);

#endif
