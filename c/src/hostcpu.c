/* Host CPU checks without LLVM (kiln/runtime/hostcpu.py): the '+' features of a target's LLVM
 * feature string that this CPU lacks, from /proc/cpuinfo's "flags" (x86-64) or "Features"
 * (aarch64) line. Features without a mapping are ignored (never reported missing); without
 * /proc/cpuinfo or that line nothing is checked. The tables are those of hostcpu.py
 * (tests/test_c_runtime.py checks that they agree). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

typedef struct feature_map {
    const char *llvm;
    const char *flags; /* space-separated cpuinfo names, all required */
} feature_map;

#if defined(__x86_64__)
static const char *const ARCH = "x86_64";
static const char *const CPUINFO_KEY = "flags";
/* BEGIN FEATURE_FLAGS */
static const feature_map FEATURES[] = {
    {"64bit", "lm"}, {"cmov", "cmov"}, {"cx8", "cx8"}, {"cx16", "cx16"}, {"fxsr", "fxsr"},
    {"mmx", "mmx"}, {"x87", "fpu"}, {"sse", "sse"}, {"sse2", "sse2"}, {"sse3", "pni"},
    {"ssse3", "ssse3"}, {"sse4.1", "sse4_1"}, {"sse4.2", "sse4_2"}, {"sse4a", "sse4a"},
    {"crc32", "sse4_2"}, {"popcnt", "popcnt"}, {"sahf", "lahf_lm"}, {"prfchw", "3dnowprefetch"},
    {"avx", "avx"}, {"avx2", "avx2"}, {"fma", "fma"}, {"fma4", "fma4"}, {"xop", "xop"},
    {"f16c", "f16c"}, {"bmi", "bmi1"}, {"bmi2", "bmi2"}, {"lzcnt", "abm"}, {"tbm", "tbm"},
    {"movbe", "movbe"}, {"aes", "aes"}, {"pclmul", "pclmulqdq"}, {"vaes", "vaes"},
    {"vpclmulqdq", "vpclmulqdq"}, {"gfni", "gfni"}, {"sha", "sha_ni"}, {"adx", "adx"},
    {"rdrnd", "rdrand"}, {"rdseed", "rdseed"}, {"rdpid", "rdpid"}, {"fsgsbase", "fsgsbase"},
    {"xsave", "xsave"}, {"xsaveopt", "xsaveopt"}, {"xsavec", "xsavec"}, {"xsaves", "xsaves"},
    {"clflushopt", "clflushopt"}, {"clwb", "clwb"}, {"clzero", "clzero"}, {"wbnoinvd", "wbnoinvd"},
    {"invpcid", "invpcid"}, {"pku", "pku"}, {"mwaitx", "mwaitx"}, {"rtm", "rtm"},
    {"movdiri", "movdiri"}, {"movdir64b", "movdir64b"}, {"waitpkg", "waitpkg"},
    {"serialize", "serialize"}, {"tsxldtrk", "tsxldtrk"}, {"cldemote", "cldemote"},
    {"enqcmd", "enqcmd"}, {"uintr", "uintr"}, {"sgx", "sgx"},
    {"avx512f", "avx512f"}, {"avx512bw", "avx512bw"}, {"avx512cd", "avx512cd"},
    {"avx512dq", "avx512dq"}, {"avx512vl", "avx512vl"}, {"avx512ifma", "avx512ifma"},
    {"avx512vbmi", "avx512vbmi"}, {"avx512vbmi2", "avx512_vbmi2"}, {"avx512vnni", "avx512_vnni"},
    {"avx512bitalg", "avx512_bitalg"}, {"avx512vpopcntdq", "avx512_vpopcntdq"},
    {"avx512bf16", "avx512_bf16"}, {"avx512fp16", "avx512_fp16"},
    {"avx512vp2intersect", "avx512_vp2intersect"}, {"avxvnni", "avx_vnni"},
    {"amx-tile", "amx_tile"}, {"amx-int8", "amx_int8"}, {"amx-bf16", "amx_bf16"},
    {NULL, NULL}};
/* END FEATURE_FLAGS */
#else
static const char *const ARCH = "aarch64";
static const char *const CPUINFO_KEY = "features";
/* BEGIN FEATURE_FLAGS */
static const feature_map FEATURES[] = {
    {"fp-armv8", "fp"}, {"neon", "asimd"}, {"crc", "crc32"}, {"lse", "atomics"},
    {"aes", "aes pmull"}, {"sha2", "sha1 sha2"}, {"sha3", "sha3"}, {"sm4", "sm3 sm4"},
    {"fullfp16", "fphp asimdhp"}, {"rdm", "asimdrdm"}, {"dotprod", "asimddp"},
    {"fp16fml", "asimdfhm"}, {"rcpc", "lrcpc"}, {"jsconv", "jscvt"}, {"complxnum", "fcma"},
    {"sve", "sve"}, {"sve2", "sve2"}, {"i8mm", "i8mm"}, {"bf16", "bf16"}, {"flagm", "flagm"},
    {"ssbs", "ssbs"}, {"sb", "sb"}, {"dit", "dit"}, {"ccpp", "dcpop"}, {"mte", "mte"},
    {NULL, NULL}};
/* END FEATURE_FLAGS */
#endif

const char *kiln_host_arch(void) { return ARCH; }

/* the host's cpuinfo feature line (" flag flag ... "), or NULL when it cannot be read */
static char *host_flags(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return NULL;
    char *line = NULL, *out = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        char *k = line, *ke = colon;
        while (*k == ' ' || *k == '\t') k++;
        while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t')) ke--;
        size_t kl = (size_t)(ke - k);
        if (kl != strlen(CPUINFO_KEY) || strncasecmp(k, CPUINFO_KEY, kl) != 0) continue;
        size_t vl = strlen(colon + 1);
        out = malloc(vl + 3);
        if (out) {
            snprintf(out, vl + 3, " %s ", colon + 1);
            for (char *p = out; *p; p++)
                if (*p == '\n' || *p == '\t') *p = ' ';
        }
        break;
    }
    free(line);
    fclose(f);
    return out;
}

static int has_flag(const char *flags, const char *name, size_t len) {
    char pat[64];
    if (len + 3 > sizeof pat) return 0;
    snprintf(pat, sizeof pat, " %.*s ", (int)len, name);
    return strstr(flags, pat) != NULL;
}

static int has_all(const char *flags, const char *need) {
    while (*need) {
        const char *sp = strchr(need, ' ');
        size_t len = sp ? (size_t)(sp - need) : strlen(need);
        if (!has_flag(flags, need, len)) return 0;
        need += len + (sp ? 1 : 0);
    }
    return 1;
}

void kiln_missing_features(const char *features, char *missing, size_t missing_size) {
    missing[0] = 0;
    char *flags = host_flags();
    if (!flags) return;
    const char *p = features;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && (*p == ' ')) p++, len--;
        if (len > 1 && p[0] == '+') {
            for (const feature_map *m = FEATURES; m->llvm; m++) {
                if (strlen(m->llvm) == len - 1 && strncmp(m->llvm, p + 1, len - 1) == 0 && !has_all(flags, m->flags)) {
                    size_t used = strlen(missing);
                    snprintf(missing + used, missing_size - used, "%s%s", used ? ", " : "", m->llvm);
                }
            }
        }
        p += len + (comma ? 1 : 0);
    }
    free(flags);
}
