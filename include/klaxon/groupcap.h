/*
 * groupcap: the per-rule cap on active groups. A correlation rule keyed by an attacker-chosen
 * field (a source port, a random user name) could otherwise create state without bound; this
 * set remembers which groups were updated recently (until their window state expires) and
 * refuses a new group once `cap` are live. The refusal is counted and logged by the caller,
 * never silent.
 *
 * The set is per process: with several klaxon processes sharing one Redis, each enforces
 * the cap on the groups it has seen (docs/scaling.md). Memory is bounded by cap: at most
 * 2 * cap slots of 16 bytes.
 *
 * Ownership: the caller owns the set (create/destroy). Not thread-safe (one loop).
 */
#ifndef KLAXON_GROUPCAP_H
#define KLAXON_GROUPCAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct kx_groupcap kx_groupcap;

/* cap > 0. Returns NULL when out of memory. */
kx_groupcap *kx_groupcap_create(size_t cap);
void kx_groupcap_destroy(kx_groupcap *g);
/* Group h was updated at now_ms; its state lives until now_ms + ttl_ms. Returns 0, or
 * -ENOSPC when h is not live and cap groups are (expired ones are dropped first). */
int kx_groupcap_touch(kx_groupcap *g, uint64_t h, int64_t now_ms, int64_t ttl_ms);
/* Live groups at now_ms (drops the expired). */
size_t kx_groupcap_live(kx_groupcap *g, int64_t now_ms);

#endif
