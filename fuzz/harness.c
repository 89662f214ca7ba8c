/*
 * Shared pieces of the fuzz targets (see harness.h). abort() here means the harness
 * itself cannot go on, or a decoded event broke its contract: libFuzzer reports either as a
 * crash with the input that caused it.
 */
#include "harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "klaxon/common.h"
#include "klaxon/yaml.h"

void kx_fuzz_file_init(kx_fuzz_file *f)
{
    f->fd = memfd_create("kx-fuzz", MFD_CLOEXEC);
    if (f->fd < 0) {
        perror("memfd_create");
        abort();
    }
    snprintf(f->path, sizeof(f->path), "/proc/self/fd/%d", f->fd);
}

void kx_fuzz_file_set(kx_fuzz_file *f, const uint8_t *data, size_t size)
{
    if (ftruncate(f->fd, 0) != 0) {
        perror("ftruncate");
        abort();
    }
    size_t off = 0;
    while (off < size) {
        ssize_t n = pwrite(f->fd, data + off, size - off, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            perror("pwrite");
            abort();
        }
        off += (size_t)n;
    }
}

void kx_fuzz_file_fini(kx_fuzz_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
}

kx_decoder *kx_fuzz_decoder(const char *yaml, int format_override)
{
    kx_yaml_doc *doc = NULL;
    kx_decoder *d = NULL;
    kx_err err = {0};
    char msg[1024];

    if (kx_yaml_load_mem("fuzz-decoder", yaml, strlen(yaml), &doc, &err) == 0 && doc->root &&
        kx_decoder_create(kx_yaml_get(doc->root, "input"), kx_yaml_get(doc->root, "decode"),
                          format_override, "fuzz-decoder", &d, &err) == 0) {
        kx_yaml_free(doc);
        return d;
    }
    kx_err_format(&err, msg, sizeof(msg));
    fprintf(stderr, "fuzz: bad decoder config: %s\n", msg);
    abort();
}

static void check_str(const char *s, uint32_t len, const char *what)
{
    if (!s || s[len] != '\0' || memchr(s, '\0', len)) {
        fprintf(stderr, "fuzz: %s breaks the NUL contract (len %u)\n", what, len);
        abort();
    }
}

/* The alert record embeds field values with kx_buf_json_str: its output must be one valid
 * JSON string, and for valid UTF-8 it must read back to exactly the value. */
static void check_json_str(kx_buf *b, const kx_field *f)
{
    kx_buf_reset(b);
    if (kx_buf_json_str(b, f->value, f->value_len) != 0)
        abort(); /* unlimited buffer: only ENOMEM, which ASan would have reported */
    json_error_t jerr;
    json_t *j = json_loadb(b->data, b->len, JSON_DECODE_ANY, &jerr);
    if (!j || !json_is_string(j)) {
        fprintf(stderr, "fuzz: kx_buf_json_str wrote invalid JSON: %s\n", jerr.text);
        abort();
    }
    bool utf8 = true;
    for (size_t k = 0; k < f->value_len && utf8;) {
        size_t n = kx_utf8_seq_len((const unsigned char *)f->value + k, f->value_len - k);
        utf8 = n > 0;
        k += n;
    }
    if (utf8 && (json_string_length(j) != f->value_len ||
                 memcmp(json_string_value(j), f->value, f->value_len) != 0)) {
        fprintf(stderr, "fuzz: kx_buf_json_str changed a valid UTF-8 value\n");
        abort();
    }
    json_decref(j);
}

void kx_fuzz_check_event(const kx_event *ev)
{
    kx_buf b;
    char id[32];

    if (!ev->tenant) {
        fprintf(stderr, "fuzz: decoded event without a tenant\n");
        abort();
    }
    kx_buf_init(&b, 0);
    for (size_t i = 0; i < ev->nfields; i++) {
        const kx_field *f = &ev->fields[i];
        check_str(f->name, f->name_len, "field name");
        check_str(f->value, f->value_len, "field value");
        if (f->type != KX_VAL_STR && f->type != KX_VAL_NUM && f->type != KX_VAL_BOOL &&
            f->type != KX_VAL_NULL) {
            fprintf(stderr, "fuzz: field %s has type %d\n", f->name, (int)f->type);
            abort();
        }
        /* Lookup by name must find this field or an earlier one of the same name (checked
         * for the first fields only: a linear lookup per field is quadratic). */
        const kx_field *g = i < 64 ? kx_event_get(ev, f->name) : f;
        if (!g || g > f || strcmp(g->name, f->name) != 0) {
            fprintf(stderr, "fuzz: kx_event_get(\"%s\") does not find the field\n", f->name);
            abort();
        }
        check_json_str(&b, f);
    }
    kx_event_id(ev, id, sizeof(id));
    kx_buf_fini(&b);
}
