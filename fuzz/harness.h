/*
 * Helpers the libFuzzer targets in fuzz/ share (docs/fuzzing.md): an in-memory file for the
 * loaders that only read paths, a decoder built from a YAML literal, and the invariant check
 * every decoded event must pass.
 *
 * Rules of every target: nothing calls exit (libFuzzer owns the process), each input frees
 * what it allocated before returning (LeakSanitizer checks each input), and state made once
 * in LLVMFuzzerInitialize is freed by an atexit handler so the final leak check is clean.
 */
#ifndef KX_FUZZ_HARNESS_H
#define KX_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "klaxon/decode.h"
#include "klaxon/event.h"
#include "klaxon/log.h"

/* libFuzzer's entry points (declared here for -Wmissing-prototypes). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A memfd with a /proc/self/fd path: the loaders read files by path, and a memfd spares a
 * temp dir to create and clean up (a crash would leave it behind) and a disk write per input. */
typedef struct kx_fuzz_file {
    int fd;
    char path[64];
} kx_fuzz_file;

/* Aborts when the memfd cannot be made: without it the target cannot run at all. */
void kx_fuzz_file_init(kx_fuzz_file *f);
/* Replaces the file's contents with data. */
void kx_fuzz_file_set(kx_fuzz_file *f, const uint8_t *data, size_t size);
void kx_fuzz_file_fini(kx_fuzz_file *f);

/* A decoder from a YAML literal with `input` and `decode` maps (either may be absent);
 * aborts with the loader's message when the literal is wrong (a bug in the target).
 * New, caller destroys. */
kx_decoder *kx_fuzz_decoder(const char *yaml, int format_override);

/* Aborts when ev breaks kx_event's contract (klaxon/event.h): strings NUL-terminated at
 * their length with no NUL inside, known value types, a tenant. Also formats each value as
 * JSON, as the alert record does, and checks jansson reads back the same bytes. */
void kx_fuzz_check_event(const kx_event *ev);

#endif
