/* The comparison evaluator (klaxon/compare.h). */
#include "klaxon/compare.h"

bool kx_cmp_one(kx_cmp op, double v, double x)
{
    switch (op) {
    case KX_CMP_GT:
        return v > x;
    case KX_CMP_GTE:
        return v >= x;
    case KX_CMP_LT:
        return v < x;
    case KX_CMP_LTE:
        return v <= x;
    case KX_CMP_EQ:
        return v == x;
    case KX_CMP_NEQ:
        return v != x;
    }
    return false;
}

bool kx_cmp_holds(const kx_cmp_term *terms, size_t n, double v)
{
    for (size_t i = 0; i < n; i++)
        if (!kx_cmp_one(terms[i].op, v, terms[i].value))
            return false;
    return true;
}
