/*
 * One vocabulary for comparisons: the operators of Sigma's correlation conditions (gt, gte,
 * lt, lte, eq, neq) and of its numeric field modifiers, and a condition as the AND of up to
 * KX_CMP_MAX_TERMS terms. The rule loader builds them, the state stores evaluate them (the
 * Redis script takes the operator as this enum's number: redis_scripts.h), detection's
 * numeric modifiers use the same operator; one evaluator serves all of them.
 */
#ifndef KLAXON_COMPARE_H
#define KLAXON_COMPARE_H

#include <stdbool.h>
#include <stddef.h>

/* The order is part of the Redis script's arguments: append only. */
typedef enum { KX_CMP_GT = 0, KX_CMP_GTE, KX_CMP_LT, KX_CMP_LTE, KX_CMP_EQ, KX_CMP_NEQ } kx_cmp;

/* One term of a condition: v <op> value. */
typedef struct kx_cmp_term {
    kx_cmp op;
    double value;
} kx_cmp_term;

#define KX_CMP_MAX_TERMS 6

/* v <op> x. */
bool kx_cmp_one(kx_cmp op, double v, double x);
/* True when v satisfies every term (n may be 0: true). */
bool kx_cmp_holds(const kx_cmp_term *terms, size_t n, double v);

#endif
