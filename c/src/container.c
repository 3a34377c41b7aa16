/* The .kiln container: header, manifest checksum and blob table (docs/format.md; the same checks,
 * in the same order, as kiln/artifact/container.py). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "cJSON.h"

static const uint8_t MAGIC[8] = {'K', 'I', 'L', 'N', 0, '\r', '\n', 0x1a};
enum { HEADER_SIZE = 64 };
#define MAX_MANIFEST_BYTES ((uint64_t)64 << 20)

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

kiln_status kiln_check_file_header(const void *data, size_t size, kiln_error *err) {
    const uint8_t *d = data;
    if (!data && size) return kiln_fail(err, KILN_ERR_INVALID_ARGUMENT, "data is NULL");
    if (size == 0) return kiln_fail(err, KILN_ERR_FORMAT, "file is empty");
    if (size < HEADER_SIZE) {
        if (memcmp(d, MAGIC, size < 8 ? size : 8) != 0)
            return kiln_fail(err, KILN_ERR_FORMAT, "not a kiln file (bad magic)");
        return kiln_fail(err, KILN_ERR_FORMAT,
                         "truncated file: %zu bytes, shorter than the %d-byte header", size,
                         HEADER_SIZE);
    }
    if (memcmp(d, MAGIC, 8) != 0) return kiln_fail(err, KILN_ERR_FORMAT, "not a kiln file (bad magic)");
    unsigned major = (unsigned)le(d + 8, 2), minor = (unsigned)le(d + 10, 2);
    uint32_t flags = (uint32_t)le(d + 12, 4);
    if (major > KILN_FORMAT_MAJOR)
        return kiln_fail(err, KILN_ERR_VERSION,
                         "format version %u.%u is newer than this kiln supports (%d.%d); upgrade "
                         "kiln to load it",
                         major, minor, KILN_FORMAT_MAJOR, KILN_FORMAT_MINOR);
    if (major < 1) return kiln_fail(err, KILN_ERR_FORMAT, "invalid format version %u.%u", major, minor);
    if (major < KILN_FORMAT_MAJOR)   /* 1.x code takes arrays without strides: recompile */
        return kiln_fail(err, KILN_ERR_VERSION,
                         "format version %u.%u was written by an older kiln; recompile it (this kiln: %d.%d)",
                         major, minor, KILN_FORMAT_MAJOR, KILN_FORMAT_MINOR);
    if (flags != 0) return kiln_fail(err, KILN_ERR_FORMAT, "unsupported header flags 0x%x", flags);
    return KILN_OK;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* 1 when `hex` (64 digits) spells `digest` */
static int digest_matches(const char *hex, const uint8_t digest[32]) {
    for (int i = 0; i < 32; i++) {
        int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0 || (uint8_t)(hi << 4 | lo) != digest[i]) return 0;
    }
    return 1;
}

/* a JSON number that is a non-negative integer exactly representable (the Python reader wants an
 * int; cJSON keeps doubles, so 1.0 is accepted where Python refuses it) */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != (double)(uint64_t)d) return 0;
    *out = (uint64_t)d;
    return 1;
}

static kiln_status read_blobs(const uint8_t *data, size_t size, uint64_t manifest_end,
                              const cJSON *table, kiln_container *out, kiln_error *err) {
    int n = cJSON_GetArraySize(table);
    out->blobs = calloc(n ? (size_t)n : 1, sizeof *out->blobs);
    if (!out->blobs) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    int i = 0;
    for (const cJSON *e = table->child; e; e = e->next, i++) {
        if (!cJSON_IsObject(e)) return kiln_fail(err, KILN_ERR_FORMAT, "manifest: blobs[%d]: expected an object", i);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "offset");
        const cJSON *sz = cJSON_GetObjectItemCaseSensitive(e, "size");
        const cJSON *sha = cJSON_GetObjectItemCaseSensitive(e, "sha256");
        uint64_t o, s;
        if (!cJSON_IsString(name) || !name->valuestring[0])
            return kiln_fail(err, KILN_ERR_FORMAT, "manifest: blobs[%d].name: expected a non-empty string", i);
        if (!json_uint(off, &o))
            return kiln_fail(err, KILN_ERR_FORMAT, "manifest: blobs[%d].offset: expected a non-negative integer", i);
        if (!json_uint(sz, &s))
            return kiln_fail(err, KILN_ERR_FORMAT, "manifest: blobs[%d].size: expected a non-negative integer", i);
        if (!cJSON_IsString(sha) || strlen(sha->valuestring) != 64)
            return kiln_fail(err, KILN_ERR_FORMAT, "manifest: blobs[%d].sha256: expected 64 hex digits", i);
        if (o < manifest_end || o + s > size)
            return kiln_fail(err, KILN_ERR_FORMAT,
                             "truncated or corrupt file: blob '%s' spans bytes %llu..%llu, file has %zu",
                             name->valuestring, (unsigned long long)o, (unsigned long long)(o + s), size);
        uint8_t digest[32];
        kiln_sha256_digest(data + o, (size_t)s, digest);
        if (!digest_matches(sha->valuestring, digest))
            return kiln_fail(err, KILN_ERR_FORMAT, "checksum mismatch in blob '%s' (the file is damaged)",
                             name->valuestring);
        for (size_t k = 0; k < out->nblobs; k++)
            if (strcmp(out->blobs[k].name, name->valuestring) == 0)
                return kiln_fail(err, KILN_ERR_FORMAT, "manifest: blobs[%d].name: duplicate blob '%s'", i,
                                 name->valuestring);
        kiln_blob *b = &out->blobs[out->nblobs];
        b->name = strdup(name->valuestring);
        if (!b->name) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        b->data = data + o;
        b->size = (size_t)s;
        out->nblobs++;
    }
    return KILN_OK;
}

kiln_status kiln_container_unpack(const uint8_t *data, size_t size, kiln_container *out,
                                  kiln_error *err) {
    memset(out, 0, sizeof *out);
    kiln_status st = kiln_check_file_header(data, size, err);
    if (st != KILN_OK) return st;
    uint64_t m_off = le(data + 16, 8), m_len = le(data + 24, 8);
    if (m_off != HEADER_SIZE || m_len > MAX_MANIFEST_BYTES)
        return kiln_fail(err, KILN_ERR_FORMAT, "bad manifest location (offset %llu, length %llu)",
                         (unsigned long long)m_off, (unsigned long long)m_len);
    if (m_off + m_len > size)
        return kiln_fail(err, KILN_ERR_FORMAT,
                         "truncated file: manifest needs bytes up to %llu, file has %zu",
                         (unsigned long long)(m_off + m_len), size);
    uint8_t digest[32];
    kiln_sha256_digest(data + m_off, (size_t)m_len, digest);
    if (memcmp(digest, data + 32, 32) != 0)
        return kiln_fail(err, KILN_ERR_FORMAT, "manifest checksum mismatch (the file is damaged)");
    out->manifest_json = (const char *)data + m_off;
    out->manifest_size = (size_t)m_len;
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(out->manifest_json, out->manifest_size, &end, 0);
    if (!doc) return kiln_fail(err, KILN_ERR_FORMAT, "manifest is not valid JSON");
    for (; end && end < out->manifest_json + out->manifest_size; end++) {
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            cJSON_Delete(doc);
            return kiln_fail(err, KILN_ERR_FORMAT, "manifest is not valid JSON: extra data after the value");
        }
    }
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return kiln_fail(err, KILN_ERR_FORMAT, "manifest: expected a JSON object at the top level");
    }
    const cJSON *table = cJSON_GetObjectItemCaseSensitive(doc, "blobs");
    if (!cJSON_IsArray(table)) {
        cJSON_Delete(doc);
        return kiln_fail(err, KILN_ERR_FORMAT, "manifest: field 'blobs' missing or not a list");
    }
    out->doc = doc;
    st = read_blobs(data, size, m_off + m_len, table, out, err);
    if (st != KILN_OK) kiln_container_free(out);
    return st;
}

void kiln_container_free(kiln_container *c) {
    for (size_t i = 0; i < c->nblobs; i++) free(c->blobs[i].name);
    free(c->blobs);
    cJSON_Delete(c->doc);
    c->doc = NULL;
    c->blobs = NULL;
    c->nblobs = 0;
}
