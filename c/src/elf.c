/* libkiln's loader for ELF64 relocatable objects: the same validation as kiln/runtime/elf.py
 * (docs/object-code.md), relocation tables for x86-64 and aarch64 keyed by (machine, type),
 * call stubs through a GOT for far externals, and W^X: code ends R-X, constants and the GOT R--,
 * only writable data stays RW-. The blob is hostile: every field is checked before use. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

enum { EM_X86_64 = 62, EM_AARCH64 = 183 };
enum { SHT_NULL = 0, SHT_PROGBITS = 1, SHT_SYMTAB = 2, SHT_STRTAB = 3, SHT_RELA = 4, SHT_HASH = 5,
       SHT_DYNAMIC = 6, SHT_NOTE = 7, SHT_NOBITS = 8, SHT_REL = 9, SHT_SHLIB = 10, SHT_DYNSYM = 11,
       SHT_INIT_ARRAY = 14, SHT_FINI_ARRAY = 15, SHT_PREINIT_ARRAY = 16, SHT_GROUP = 17,
       SHT_SYMTAB_SHNDX = 18 };
#define SHT_X86_64_UNWIND 0x70000001u
#define SHT_LLVM_ADDRSIG 0x6FFF4C03u
#define SHT_AARCH64_ATTRIBUTES 0x70000003u
enum { SHF_WRITE = 1, SHF_ALLOC = 2, SHF_EXECINSTR = 4, SHF_GROUP = 0x200, SHF_TLS = 0x400 };
enum { SHN_UNDEF = 0, SHN_LORESERVE = 0xFF00, SHN_ABS = 0xFFF1, SHN_COMMON = 0xFFF2, SHN_XINDEX = 0xFFFF };
enum { STB_LOCAL = 0, STB_GLOBAL = 1, STB_WEAK = 2 };
enum { STT_FUNC = 2, STT_COMMON = 5, STT_TLS = 6, STT_GNU_IFUNC = 10 };
enum { PAGE = 4096, MAX_ALIGN = 4096 };
#define MAX_IMAGE_SIZE ((uint64_t)1 << 30)

/* ---------------------------------------------------------------- relocation tables */

typedef enum kind {
    K_NONE, K_ABS64, K_ABS32U, K_ABS32S, K_PC, K_PLT, K_GOTPC, /* x86-64 style: write an integer */
    K_A64_BRANCH26, K_A64_PAGE, K_A64_ADD_LO12, K_A64_LDST_LO12, K_A64_GOT_PAGE, K_A64_GOT_LO12,
    K_A64_CONDBR19, K_A64_TSTBR14                               /* aarch64: instruction fields */
} kind;

typedef struct reloc_desc {
    uint16_t machine;
    uint32_t type;
    const char *name;
    kind kind;
    uint8_t width; /* bytes patched */
    uint8_t shift; /* LDST*_ABS_LO12_NC: log2 of the access size */
} reloc_desc;

static const reloc_desc RELOCATIONS[] = {
    {EM_X86_64, 0, "R_X86_64_NONE", K_NONE, 0, 0},
    {EM_X86_64, 1, "R_X86_64_64", K_ABS64, 8, 0},
    {EM_X86_64, 2, "R_X86_64_PC32", K_PC, 4, 0},
    {EM_X86_64, 4, "R_X86_64_PLT32", K_PLT, 4, 0},
    {EM_X86_64, 9, "R_X86_64_GOTPCREL", K_GOTPC, 4, 0},
    {EM_X86_64, 10, "R_X86_64_32", K_ABS32U, 4, 0},
    {EM_X86_64, 11, "R_X86_64_32S", K_ABS32S, 4, 0},
    {EM_X86_64, 24, "R_X86_64_PC64", K_PC, 8, 0},
    {EM_X86_64, 41, "R_X86_64_GOTPCRELX", K_GOTPC, 4, 0},
    {EM_X86_64, 42, "R_X86_64_REX_GOTPCRELX", K_GOTPC, 4, 0},
    {EM_AARCH64, 0, "R_AARCH64_NONE", K_NONE, 0, 0},
    {EM_AARCH64, 256, "R_AARCH64_NONE", K_NONE, 0, 0},
    {EM_AARCH64, 257, "R_AARCH64_ABS64", K_ABS64, 8, 0},
    {EM_AARCH64, 258, "R_AARCH64_ABS32", K_ABS32U, 4, 0},
    {EM_AARCH64, 260, "R_AARCH64_PREL64", K_PC, 8, 0},
    {EM_AARCH64, 261, "R_AARCH64_PREL32", K_PC, 4, 0},
    {EM_AARCH64, 275, "R_AARCH64_ADR_PREL_PG_HI21", K_A64_PAGE, 4, 0},
    {EM_AARCH64, 277, "R_AARCH64_ADD_ABS_LO12_NC", K_A64_ADD_LO12, 4, 0},
    {EM_AARCH64, 278, "R_AARCH64_LDST8_ABS_LO12_NC", K_A64_LDST_LO12, 4, 0},
    {EM_AARCH64, 279, "R_AARCH64_TSTBR14", K_A64_TSTBR14, 4, 0},
    {EM_AARCH64, 280, "R_AARCH64_CONDBR19", K_A64_CONDBR19, 4, 0},
    {EM_AARCH64, 282, "R_AARCH64_JUMP26", K_A64_BRANCH26, 4, 0},
    {EM_AARCH64, 283, "R_AARCH64_CALL26", K_A64_BRANCH26, 4, 0},
    {EM_AARCH64, 284, "R_AARCH64_LDST16_ABS_LO12_NC", K_A64_LDST_LO12, 4, 1},
    {EM_AARCH64, 285, "R_AARCH64_LDST32_ABS_LO12_NC", K_A64_LDST_LO12, 4, 2},
    {EM_AARCH64, 286, "R_AARCH64_LDST64_ABS_LO12_NC", K_A64_LDST_LO12, 4, 3},
    {EM_AARCH64, 299, "R_AARCH64_LDST128_ABS_LO12_NC", K_A64_LDST_LO12, 4, 4},
    {EM_AARCH64, 311, "R_AARCH64_ADR_GOT_PAGE", K_A64_GOT_PAGE, 4, 0},
    {EM_AARCH64, 312, "R_AARCH64_LD64_GOT_LO12_NC", K_A64_GOT_LO12, 4, 0},
};

static const reloc_desc *find_reloc(uint16_t machine, uint32_t type) {
    for (size_t i = 0; i < sizeof RELOCATIONS / sizeof RELOCATIONS[0]; i++)
        if (RELOCATIONS[i].machine == machine && RELOCATIONS[i].type == type) return &RELOCATIONS[i];
    return NULL;
}

#if defined(__x86_64__)
#define HOST_MACHINE EM_X86_64
/* jmp *[rip+disp32]; int3 padding. The displacement (at byte 2) is patched in. */
static const uint8_t STUB[8] = {0xff, 0x25, 0, 0, 0, 0, 0xcc, 0xcc};
#elif defined(__aarch64__)
#define HOST_MACHINE EM_AARCH64
/* adrp x16, slot; ldr x16, [x16, :lo12:slot]; br x16; nop (the adrp/ldr fields are patched) */
static const uint8_t STUB[16] = {0x10, 0, 0, 0x90, 0x10, 0x02, 0x40, 0xf9,
                                 0x00, 0x02, 0x1f, 0xd6, 0x1f, 0x20, 0x03, 0xd5};
#else
#error "libkiln loads x86-64 and aarch64 code only"
#endif

static const char *machine_name(unsigned m) {
    return m == EM_X86_64 ? "x86-64" : m == EM_AARCH64 ? "aarch64" : "unknown";
}

/* ---------------------------------------------------------------- parsing */

typedef struct section {
    uint32_t name_off, type, link, info;
    uint64_t flags, offset, size, align, entsize;
    const char *name;
} section;

typedef struct symbol {
    const char *name;
    uint8_t bind, type;
    uint16_t shndx;
    uint64_t value;
} symbol;

typedef struct object_info {
    uint16_t machine;
    size_t nsections, nsymbols;
    section *sections;
    symbol *symbols;
    int *loaded;        /* per section: 1 if loaded into memory */
    size_t *relas;      /* indices of relocation sections applying to loaded sections */
    size_t nrelas;
} object_info;

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static kiln_status elf_err(kiln_error *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static kiln_status elf_err(kiln_error *err, const char *fmt, ...) {
    char msg[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return kiln_fail(err, KILN_ERR_ELF, "ELF: %s", msg);
}

/* a NUL-terminated string at `off` of string table `st`, or NULL */
static const char *cstr(const uint8_t *blob, const section *st, uint64_t off) {
    if (off >= st->size) return NULL;
    const char *s = (const char *)blob + st->offset + off;
    return memchr(s, 0, st->size - off) ? s : NULL;
}

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static int starts_with_any(const char *s, const char *const *prefixes) {
    for (; *prefixes; prefixes++)
        if (starts_with(s, *prefixes)) return 1;
    return 0;
}

static kiln_status check_header(const uint8_t *blob, size_t n, kiln_error *err) {
    if (n < 64) return elf_err(err, "object is %zu bytes, shorter than the 64-byte ELF header", n);
    if (memcmp(blob, "\x7f" "ELF", 4) != 0) return elf_err(err, "bad magic (e_ident[EI_MAG0..3]), not an ELF object");
    if (blob[4] != 2) return elf_err(err, "e_ident[EI_CLASS] is %u, expected 2 (ELFCLASS64)", blob[4]);
    if (blob[5] != 1) return elf_err(err, "e_ident[EI_DATA] is %u, expected 1 (little-endian)", blob[5]);
    if (blob[6] != 1) return elf_err(err, "e_ident[EI_VERSION] is %u, expected 1", blob[6]);
    if (rd32(blob + 20) != 1) return elf_err(err, "e_version is %u, expected 1", rd32(blob + 20));
    if (rd16(blob + 16) != 1)
        return elf_err(err, "e_type is %u, expected 1 (ET_REL, a relocatable object)", rd16(blob + 16));
    unsigned machine = rd16(blob + 18);
    if (machine != HOST_MACHINE)
        return elf_err(err, "e_machine is %u (%s); this loader relocates only %u (%s)", machine,
                       machine_name(machine), HOST_MACHINE, machine_name(HOST_MACHINE));
    if (rd16(blob + 52) != 64) return elf_err(err, "e_ehsize is %u, expected 64", rd16(blob + 52));
    if (rd16(blob + 58) != 64) return elf_err(err, "e_shentsize is %u, expected 64", rd16(blob + 58));
    return KILN_OK;
}

static kiln_status read_sections(const uint8_t *blob, size_t n, object_info *o, kiln_error *err) {
    uint64_t shoff = rd64(blob + 40);
    unsigned shnum = rd16(blob + 60), shstrndx = rd16(blob + 62);
    if (shnum == 0) return elf_err(err, "e_shnum is 0 (no section table, or an extended count, which is unsupported)");
    if (shoff < 64 || shoff > n || (n - shoff) / 64 < shnum)
        return elf_err(err, "section header table (e_shoff 0x%llx, e_shnum %u) beyond end of object (0x%zx bytes)",
                       (unsigned long long)shoff, shnum, n);
    if (shstrndx == SHN_UNDEF || shstrndx >= shnum)
        return elf_err(err, "e_shstrndx %u out of range (e_shnum %u)", shstrndx, shnum);
    o->sections = calloc(shnum, sizeof *o->sections);
    o->loaded = calloc(shnum, sizeof *o->loaded);
    o->relas = calloc(shnum, sizeof *o->relas);
    if (!o->sections || !o->loaded || !o->relas) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    o->nsections = shnum;
    for (unsigned i = 0; i < shnum; i++) {
        const uint8_t *h = blob + shoff + 64 * (uint64_t)i;
        section *s = &o->sections[i];
        s->name_off = rd32(h);
        s->type = rd32(h + 4);
        s->flags = rd64(h + 8);
        s->offset = rd64(h + 24);
        s->size = rd64(h + 32);
        s->link = rd32(h + 40);
        s->info = rd32(h + 44);
        s->align = rd64(h + 48);
        s->entsize = rd64(h + 56);
        s->name = "";
        if (i == 0) {
            if (s->type != SHT_NULL) return elf_err(err, "section 0 is not SHT_NULL");
            continue;
        }
        if (s->type != SHT_NOBITS && (s->offset > n || s->size > n - s->offset))
            return elf_err(err, "section %u offset+size 0x%llx beyond end of object (0x%zx bytes)", i,
                           (unsigned long long)(s->offset + s->size), n);
        if (s->link >= shnum) return elf_err(err, "section %u sh_link %u out of range (e_shnum %u)", i, s->link, shnum);
        if (s->align & (s->align - 1))
            return elf_err(err, "section %u sh_addralign %llu is not a power of two", i, (unsigned long long)s->align);
    }
    const section *shstr = &o->sections[shstrndx];
    if (shstr->type != SHT_STRTAB)
        return elf_err(err, "e_shstrndx %u is not a string table (sh_type %u)", shstrndx, shstr->type);
    for (unsigned i = 1; i < shnum; i++) {
        const char *name = cstr(blob, shstr, o->sections[i].name_off);
        if (!name) return elf_err(err, "section %u sh_name offset 0x%x out of range or not NUL-terminated", i,
                                  o->sections[i].name_off);
        o->sections[i].name = name;
    }
    return KILN_OK;
}

static kiln_status classify_sections(object_info *o, size_t *symtab, kiln_error *err) {
    static const char *const ctor[] = {".init_array", ".fini_array", ".preinit_array", ".ctors", ".dtors",
                                       ".init", ".fini", NULL};
    static const char *const tls[] = {".tdata", ".tbss", NULL};
    *symtab = 0;
    for (size_t i = 1; i < o->nsections; i++) {
        const section *s = &o->sections[i];
        if ((s->flags & SHF_TLS) || starts_with_any(s->name, tls))
            return elf_err(err, "section %zu (%s) holds thread-local storage (TLS), which kiln objects must not use",
                           i, s->name);
        switch (s->type) {
        case SHT_HASH: case SHT_DYNAMIC: case SHT_SHLIB: case SHT_DYNSYM: case SHT_INIT_ARRAY:
        case SHT_FINI_ARRAY: case SHT_PREINIT_ARRAY: case SHT_GROUP: case SHT_SYMTAB_SHNDX:
            return elf_err(err, "section %zu (%s) has sh_type %u, which is unsupported", i, s->name, s->type);
        default: break;
        }
        if (starts_with_any(s->name, ctor) && (s->flags & SHF_ALLOC))
            return elf_err(err, "section %zu (%s): static constructors/destructors are not supported", i, s->name);
        if (s->flags & SHF_GROUP)
            return elf_err(err, "section %zu (%s) is in a section group (COMDAT), which is unsupported", i, s->name);
        if (s->type == SHT_SYMTAB) {
            if (*symtab) return elf_err(err, "section %zu (%s) is a second symbol table", i, s->name);
            *symtab = i;
        } else if (s->type == SHT_RELA || s->type == SHT_REL) {
            o->relas[o->nrelas++] = i;
        } else if (s->flags & SHF_ALLOC) {
            if (s->type == SHT_PROGBITS || s->type == SHT_NOBITS) {
                if (starts_with(s->name, ".eh_frame")) continue; /* unwind tables are not registered */
                if (s->align > MAX_ALIGN)
                    return elf_err(err, "section %zu (%s) sh_addralign %llu exceeds the page size %d", i, s->name,
                                   (unsigned long long)s->align, MAX_ALIGN);
                o->loaded[i] = 1;
            } else if (s->type != SHT_X86_64_UNWIND && s->type != SHT_NOTE && s->type != SHT_LLVM_ADDRSIG &&
                       s->type != SHT_AARCH64_ATTRIBUTES) {
                return elf_err(err, "section %zu (%s) is allocatable with unsupported sh_type 0x%x", i, s->name,
                               s->type);
            }
        }
    }
    return KILN_OK;
}

static kiln_status check_symbol(const symbol *sym, size_t k, const object_info *o, kiln_error *err) {
    const char *nm = sym->name[0] ? sym->name : "?";
    if (sym->type == STT_TLS)
        return elf_err(err, "symbol %zu (%s) is thread-local (STT_TLS), which kiln objects must not use", k, nm);
    if (sym->type == STT_GNU_IFUNC)
        return elf_err(err, "symbol %zu (%s) is an indirect function (STT_GNU_IFUNC), which is unsupported", k, nm);
    if (sym->shndx == SHN_COMMON || sym->type == STT_COMMON)
        return elf_err(err, "symbol %zu (%s) is a COMMON symbol, which is unsupported", k, nm);
    if (sym->shndx == SHN_XINDEX) return elf_err(err, "symbol %zu (%s) st_shndx uses SHN_XINDEX, which is unsupported", k, nm);
    if (sym->shndx != SHN_ABS && sym->shndx >= SHN_LORESERVE)
        return elf_err(err, "symbol %zu (%s) st_shndx 0x%x is a reserved index, unsupported", k, nm, sym->shndx);
    if (sym->shndx == SHN_UNDEF) {
        if (sym->bind == STB_LOCAL) return KILN_OK;
        if (sym->bind != STB_GLOBAL && sym->bind != STB_WEAK)
            return elf_err(err, "symbol %zu (%s) has unsupported binding %u", k, nm, sym->bind);
        if (!kiln_external_allowed(sym->name))
            return elf_err(err, "external symbol '%s' (symbol %zu) is not in the allowed list "
                           "(ALLOWED_EXTERNAL_SYMBOLS: libm math, mem*, half-float helpers)", sym->name, k);
        return KILN_OK;
    }
    if (sym->shndx == SHN_ABS) return KILN_OK;
    if (sym->shndx >= o->nsections)
        return elf_err(err, "symbol %zu (%s) st_shndx %u out of range (e_shnum %zu)", k, nm, sym->shndx, o->nsections);
    if (o->loaded[sym->shndx] && sym->value > o->sections[sym->shndx].size)
        return elf_err(err, "symbol %zu (%s) st_value 0x%llx beyond end of section %u (%s) (0x%llx bytes)", k, nm,
                       (unsigned long long)sym->value, sym->shndx, o->sections[sym->shndx].name,
                       (unsigned long long)o->sections[sym->shndx].size);
    if (sym->bind != STB_LOCAL && sym->name[0] && sym->type <= STT_FUNC && sym->bind != STB_GLOBAL &&
        sym->bind != STB_WEAK)
        return elf_err(err, "symbol %zu (%s) has unsupported binding %u", k, nm, sym->bind);
    return KILN_OK;
}

static kiln_status read_symbols(const uint8_t *blob, object_info *o, size_t symtab, kiln_error *err) {
    if (!symtab) return KILN_OK;
    const section *st = &o->sections[symtab];
    if (st->entsize != 24) return elf_err(err, "section %zu (%s) sh_entsize %llu, expected 24", symtab, st->name,
                                          (unsigned long long)st->entsize);
    if (st->size % 24) return elf_err(err, "section %zu (%s) sh_size 0x%llx is not a multiple of 24", symtab,
                                      st->name, (unsigned long long)st->size);
    const section *strtab = &o->sections[st->link];
    if (strtab->type != SHT_STRTAB)
        return elf_err(err, "section %zu (%s) sh_link %u is not a string table", symtab, st->name, st->link);
    size_t n = st->size / 24;
    if (st->info > n) return elf_err(err, "section %zu (%s) sh_info %u beyond its %zu symbols", symtab, st->name,
                                     st->info, n);
    o->symbols = calloc(n ? n : 1, sizeof *o->symbols);
    if (!o->symbols) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    o->nsymbols = n;
    for (size_t k = 0; k < n; k++) {
        const uint8_t *p = blob + st->offset + 24 * k;
        symbol *sym = &o->symbols[k];
        uint32_t name_off = rd32(p);
        sym->name = "";
        if (name_off) {
            sym->name = cstr(blob, strtab, name_off);
            if (!sym->name) return elf_err(err, "symbol %zu st_name offset 0x%x beyond end of string table or not "
                                           "NUL-terminated", k, name_off);
        }
        sym->bind = p[4] >> 4;
        sym->type = p[4] & 0xF;
        sym->shndx = rd16(p + 6);
        sym->value = rd64(p + 8);
        if (k == 0) continue;
        kiln_status s = check_symbol(sym, k, o, err);
        if (s != KILN_OK) return s;
    }
    return KILN_OK;
}

static kiln_status check_relas(object_info *o, size_t symtab, kiln_error *err) {
    size_t kept = 0;
    for (size_t j = 0; j < o->nrelas; j++) {
        const section *r = &o->sections[o->relas[j]];
        size_t i = o->relas[j];
        if (r->info == 0 || r->info >= o->nsections)
            return elf_err(err, "section %zu (%s) sh_info %u (target section) out of range (e_shnum %zu)", i, r->name,
                           r->info, o->nsections);
        if (!o->loaded[r->info]) continue; /* debug info, .eh_frame...: not loaded, not applied */
        if (r->type == SHT_REL)
            return elf_err(err, "section %zu (%s) is SHT_REL; only SHT_RELA relocations are supported", i, r->name);
        if (!symtab || r->link != symtab)
            return elf_err(err, "section %zu (%s) sh_link %u is not the symbol table", i, r->name, r->link);
        if (r->entsize != 24) return elf_err(err, "section %zu (%s) sh_entsize %llu, expected 24", i, r->name,
                                             (unsigned long long)r->entsize);
        if (r->size % 24) return elf_err(err, "section %zu (%s) sh_size 0x%llx is not a multiple of 24", i, r->name,
                                         (unsigned long long)r->size);
        o->relas[kept++] = i;
    }
    o->nrelas = kept;
    return KILN_OK;
}

static void free_info(object_info *o) {
    free(o->sections);
    free(o->symbols);
    free(o->loaded);
    free(o->relas);
}

static kiln_status inspect(const uint8_t *blob, size_t n, object_info *o, kiln_error *err) {
    memset(o, 0, sizeof *o);
    size_t symtab = 0;
    kiln_status st = check_header(blob, n, err);
    if (st == KILN_OK) {
        o->machine = rd16(blob + 18);
        st = read_sections(blob, n, o, err);
    }
    if (st == KILN_OK) st = classify_sections(o, &symtab, err);
    if (st == KILN_OK) st = read_symbols(blob, o, symtab, err);
    if (st == KILN_OK) st = check_relas(o, symtab, err);
    return st;
}


/* ---------------------------------------------------------------- loading */

typedef struct rel_entry {
    uint64_t offset;
    const reloc_desc *desc;
    uint32_t sym;
    int64_t addend;
    uint32_t target; /* section index */
} rel_entry;

typedef struct image {
    uint8_t *base;
    uint64_t total;
    uint64_t *offsets;    /* per section (loaded ones) */
    int64_t *got_slot;    /* per symbol, -1 if none */
    int64_t *stub_slot;   /* per symbol, -1 if none */
    uint64_t got_base, stub_base;
    uint64_t bounds[3][2];
    uintptr_t *addr;      /* per symbol, resolved lazily */
    uint8_t *have_addr;
} image;

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

static int needs_got(kind k) { return k == K_GOTPC || k == K_A64_GOT_PAGE || k == K_A64_GOT_LO12; }

static kiln_status collect_relocs(const uint8_t *blob, const object_info *o, image *im, rel_entry **out,
                                  size_t *nout, size_t *ngot, size_t *nstub, kiln_error *err) {
    size_t total = 0;
    for (size_t j = 0; j < o->nrelas; j++) total += o->sections[o->relas[j]].size / 24;
    rel_entry *rs = calloc(total ? total : 1, sizeof *rs);
    if (!rs) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    *out = rs;
    for (size_t j = 0; j < o->nrelas; j++) {
        const section *r = &o->sections[o->relas[j]];
        const section *t = &o->sections[r->info];
        for (size_t k = 0; k < r->size / 24; k++) {
            const uint8_t *p = blob + r->offset + 24 * k;
            uint64_t info = rd64(p + 8);
            uint32_t sym = (uint32_t)(info >> 32), type = (uint32_t)info;
            rel_entry *e = &rs[(*nout)++];
            e->offset = rd64(p);
            e->addend = (int64_t)rd64(p + 16);
            e->sym = sym;
            e->target = r->info;
            e->desc = find_reloc(o->machine, type);
            if (!e->desc)
                return elf_err(err, "section %zu (%s) relocation %zu: unknown relocation type %u for %s", o->relas[j],
                               r->name, k, type, machine_name(o->machine));
            if (sym >= o->nsymbols)
                return elf_err(err, "section %zu (%s) relocation %zu: symbol index %u out of range (%zu symbols)",
                               o->relas[j], r->name, k, sym, o->nsymbols);
            if (e->offset > t->size || e->desc->width > t->size - e->offset)
                return elf_err(err, "section %zu (%s) relocation %zu: r_offset 0x%llx (+%u) beyond end of target "
                               "section %u (%s) (0x%llx bytes)", o->relas[j], r->name, k,
                               (unsigned long long)e->offset, e->desc->width, r->info, t->name,
                               (unsigned long long)t->size);
            kind kd = e->desc->kind;
            int stub = (kd == K_PLT || kd == K_A64_BRANCH26) && o->symbols[sym].shndx == SHN_UNDEF;
            if (stub && im->stub_slot[sym] < 0) im->stub_slot[sym] = (int64_t)(*nstub)++;
            if ((stub || needs_got(kd)) && im->got_slot[sym] < 0) im->got_slot[sym] = (int64_t)(*ngot)++;
        }
    }
    return KILN_OK;
}

static kiln_status lay_out(const object_info *o, image *im, size_t ngot, size_t nstub, kiln_error *err) {
    uint64_t pos = 0;
    for (int g = 0; g < 3; g++) {
        uint64_t start = pos;
        for (size_t i = 1; i < o->nsections; i++) {
            const section *s = &o->sections[i];
            if (!o->loaded[i]) continue;
            int group = (s->flags & SHF_EXECINSTR) ? 0 : (s->flags & SHF_WRITE) ? 2 : 1;
            if (group != g) continue;
            pos = align_up(pos, s->align ? s->align : 1);
            im->offsets[i] = pos;
            if (s->size > MAX_IMAGE_SIZE || pos + s->size > MAX_IMAGE_SIZE)
                return elf_err(err, "section %zu (%s) sh_size 0x%llx: image exceeds 0x%llx bytes", i, s->name,
                               (unsigned long long)s->size, (unsigned long long)MAX_IMAGE_SIZE);
            pos += s->size;
        }
        if (g == 0 && nstub) {
            pos = align_up(pos, 16);
            im->stub_base = pos;
            pos += sizeof STUB * nstub;
        }
        if (g == 1 && ngot) {
            pos = align_up(pos, 8);
            im->got_base = pos;
            pos += 8 * ngot;
        }
        pos = align_up(pos, PAGE);
        im->bounds[g][0] = start;
        im->bounds[g][1] = pos;
    }
    im->total = pos;
    return KILN_OK;
}

static kiln_status sym_addr(const object_info *o, image *im, uint32_t k, uintptr_t *out, kiln_error *err) {
    if (im->have_addr[k]) {
        *out = im->addr[k];
        return KILN_OK;
    }
    const symbol *sym = &o->symbols[k];
    uintptr_t a;
    if (sym->shndx == SHN_UNDEF) {
        if (!sym->name[0]) return elf_err(err, "relocation against undefined unnamed symbol %u", k);
        a = (uintptr_t)kiln_resolve_external(sym->name);
        if (!a && sym->bind != STB_WEAK)
            return elf_err(err, "external symbol '%s' not found in libm/libc/libgcc_s", sym->name);
    } else if (sym->shndx == SHN_ABS) {
        a = (uintptr_t)sym->value;
    } else if (sym->shndx < o->nsections && o->loaded[sym->shndx]) {
        a = (uintptr_t)(im->base + im->offsets[sym->shndx] + sym->value);
    } else {
        return elf_err(err, "symbol %u (%s) lives in section %u, which is not loaded", k, sym->name, sym->shndx);
    }
    im->addr[k] = a;
    im->have_addr[k] = 1;
    *out = a;
    return KILN_OK;
}

static uint32_t page_field(uint32_t insn, int64_t delta) {
    int64_t imm = delta >> 12;
    return (insn & ~((3u << 29) | (0x7ffffu << 5))) | (uint32_t)((imm & 3) << 29) |
           (uint32_t)(((imm >> 2) & 0x7ffff) << 5);
}

static uint32_t imm12_field(uint32_t insn, uint64_t imm) { return (insn & ~(0xfffu << 10)) | (uint32_t)(imm << 10); }

static int64_t page_delta(uintptr_t target, uintptr_t p) {
    return (int64_t)(target & ~(uintptr_t)0xfff) - (int64_t)(p & ~(uintptr_t)0xfff);
}

static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

static void write_stubs(const object_info *o, image *im) {
    for (uint32_t k = 0; k < o->nsymbols; k++) {
        if (im->stub_slot[k] < 0) continue;
        uint8_t *at = im->base + im->stub_base + sizeof STUB * (uint64_t)im->stub_slot[k];
        uintptr_t slot = (uintptr_t)(im->base + im->got_base + 8 * (uint64_t)im->got_slot[k]);
        memcpy(at, STUB, sizeof STUB);
#if defined(__x86_64__)
        int32_t disp = (int32_t)((int64_t)slot - (int64_t)((uintptr_t)at + 6));
        memcpy(at + 2, &disp, 4);
#else
        wr32(at, page_field(rd32(at), page_delta(slot, (uintptr_t)at)));
        wr32(at + 4, imm12_field(rd32(at + 4), (slot & 0xfff) >> 3));
#endif
    }
}

/* the value patched for one relocation at address p (S: symbol or stub, G: GOT slot) */
static kiln_status apply_one(const rel_entry *e, uint8_t *at, uintptr_t s, uintptr_t g, const char *where,
                             kiln_error *err) {
    uintptr_t p = (uintptr_t)at;
    int64_t a = e->addend;
    uint64_t v = (uint64_t)s + (uint64_t)a;       /* S+A */
    int64_t pc = (int64_t)(v - (uint64_t)p);        /* S+A-P */
    uint32_t insn = e->desc->width == 4 ? rd32(at) : 0;
    const char *nm = e->desc->name;
    switch (e->desc->kind) {
    case K_NONE: return KILN_OK;
    case K_ABS64: memcpy(at, &v, 8); return KILN_OK;
    case K_ABS32U:
        if (v >> 32) return elf_err(err, "%s at %s: value 0x%llx does not fit in 32 bits unsigned (non-PIC code?)", nm, where,
                                    (unsigned long long)v);
        wr32(at, (uint32_t)v);
        return KILN_OK;
    case K_ABS32S:
        if ((int64_t)v < INT32_MIN || (int64_t)v > INT32_MAX)
            return elf_err(err, "%s at %s: value 0x%llx does not fit in 32 bits signed (non-PIC code?)", nm, where,
                           (unsigned long long)v);
        wr32(at, (uint32_t)v);
        return KILN_OK;
    case K_GOTPC: pc = (int64_t)(g + (uint64_t)a - p); /* fall through */
    case K_PC: case K_PLT:
        if (e->desc->width == 8) {
            memcpy(at, &pc, 8);
            return KILN_OK;
        }
        if (pc < INT32_MIN || pc > INT32_MAX)
            return elf_err(err, "%s at %s: displacement 0x%llx does not fit in 32 bits", nm, where, (unsigned long long)pc);
        wr32(at, (uint32_t)(int32_t)pc);
        return KILN_OK;
    case K_A64_BRANCH26:
        if (pc < -(1LL << 27) || pc >= (1LL << 27) || (pc & 3))
            return elf_err(err, "%s at %s: branch displacement 0x%llx out of range (+-128 MiB)", nm, where, (unsigned long long)pc);
        wr32(at, (insn & ~0x3ffffffu) | (uint32_t)((pc >> 2) & 0x3ffffff));
        return KILN_OK;
    case K_A64_CONDBR19:
        if (pc < -(1LL << 20) || pc >= (1LL << 20) || (pc & 3))
            return elf_err(err, "%s at %s: branch displacement out of range (+-1 MiB)", nm, where);
        wr32(at, (insn & ~(0x7ffffu << 5)) | (uint32_t)(((pc >> 2) & 0x7ffff) << 5));
        return KILN_OK;
    case K_A64_TSTBR14:
        if (pc < -(1LL << 15) || pc >= (1LL << 15) || (pc & 3))
            return elf_err(err, "%s at %s: branch displacement out of range (+-32 KiB)", nm, where);
        wr32(at, (insn & ~(0x3fffu << 5)) | (uint32_t)(((pc >> 2) & 0x3fff) << 5));
        return KILN_OK;
    case K_A64_GOT_PAGE: case K_A64_GOT_LO12:
        if (a != 0) return elf_err(err, "%s at %s with a non-zero addend is unsupported", nm, where);
        v = g; /* fall through */
    case K_A64_PAGE: case K_A64_ADD_LO12: case K_A64_LDST_LO12:
        break;
    }
    kind k = e->desc->kind;
    if (k == K_A64_PAGE || k == K_A64_GOT_PAGE) {
        int64_t d = page_delta((uintptr_t)v, p);
        if (d < -(1LL << 32) || d >= (1LL << 32))
            return elf_err(err, "%s at %s: page offset out of range (+-4 GiB)", nm, where);
        wr32(at, page_field(insn, d));
        return KILN_OK;
    }
    unsigned shift = k == K_A64_GOT_LO12 ? 3 : k == K_A64_LDST_LO12 ? e->desc->shift : 0;
    uint64_t lo = v & 0xfff;
    if (lo & ((1u << shift) - 1))
        return elf_err(err, "%s at %s: address 0x%llx is not aligned to the %u-byte access", nm, where, (unsigned long long)v,
                       1u << shift);
    wr32(at, imm12_field(insn, lo >> shift));
    return KILN_OK;
}

static kiln_status populate(const uint8_t *blob, const object_info *o, image *im, const rel_entry *rs, size_t nrs,
                            kiln_error *err) {
    for (size_t i = 1; i < o->nsections; i++) {
        const section *s = &o->sections[i];
        if (o->loaded[i] && s->type != SHT_NOBITS && s->size) memcpy(im->base + im->offsets[i], blob + s->offset, s->size);
    }
    for (uint32_t k = 0; k < o->nsymbols; k++) {
        if (im->got_slot[k] < 0) continue;
        uintptr_t a;
        kiln_status st = sym_addr(o, im, k, &a, err);
        if (st != KILN_OK) return st;
        uint64_t v = a;
        memcpy(im->base + im->got_base + 8 * (uint64_t)im->got_slot[k], &v, 8);
    }
    write_stubs(o, im);
    for (size_t i = 0; i < nrs; i++) {
        const rel_entry *e = &rs[i];
        if (e->desc->kind == K_NONE) continue;
        uintptr_t s, g = 0;
        kiln_status st = sym_addr(o, im, e->sym, &s, err);
        if (st != KILN_OK) return st;
        if (im->stub_slot[e->sym] >= 0 && (e->desc->kind == K_PLT || e->desc->kind == K_A64_BRANCH26))
            s = (uintptr_t)(im->base + im->stub_base + sizeof STUB * (uint64_t)im->stub_slot[e->sym]);
        if (im->got_slot[e->sym] >= 0) g = (uintptr_t)(im->base + im->got_base + 8 * (uint64_t)im->got_slot[e->sym]);
        char where[200];
        snprintf(where, sizeof where, "section %u (%s)+0x%llx", e->target, o->sections[e->target].name,
                 (unsigned long long)e->offset);
        st = apply_one(e, im->base + im->offsets[e->target] + e->offset, s, g, where, err);
        if (st != KILN_OK) return st;
    }
    return KILN_OK;
}

static kiln_status exports(const object_info *o, image *im, kiln_loaded_object *out, kiln_error *err) {
    out->names = calloc(o->nsymbols + 1, sizeof *out->names);
    out->addresses = calloc(o->nsymbols + 1, sizeof *out->addresses);
    if (!out->names || !out->addresses) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    for (uint32_t k = 1; k < o->nsymbols; k++) {
        const symbol *sym = &o->symbols[k];
        if (sym->bind == STB_LOCAL || !sym->name[0] || sym->shndx == SHN_UNDEF) continue;
        if (sym->shndx != SHN_ABS && (sym->type > STT_FUNC || !o->loaded[sym->shndx])) continue;
        uintptr_t a;
        kiln_status st = sym_addr(o, im, k, &a, err);
        if (st != KILN_OK) return st;
        if (!(out->names[out->nsymbols] = strdup(sym->name))) return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        out->addresses[out->nsymbols++] = a;
    }
    return KILN_OK;
}

static kiln_status map_and_fill(const uint8_t *blob, const object_info *o, image *im, const rel_entry *rs, size_t nrs,
                                kiln_loaded_object *out, kiln_error *err) {
    void *base = mmap(NULL, im->total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "ELF: cannot map %llu bytes for the object image",
                         (unsigned long long)im->total);
    im->base = base;
    out->base = base;
    out->size = (size_t)im->total;
    kiln_status st = populate(blob, o, im, rs, nrs, err);
    if (st == KILN_OK) st = exports(o, im, out, err);
    if (st != KILN_OK) return st;
    uint8_t *b = im->base;
    out->code_lo = (uintptr_t)(b + im->bounds[0][0]);
    out->code_hi = (uintptr_t)(b + im->bounds[0][1]);
    out->data_lo = (uintptr_t)(b + im->bounds[2][0]);
    out->data_hi = (uintptr_t)(b + im->bounds[2][1]);
    /* aarch64 needs the instruction cache to see the written code; a no-op on x86-64 */
    __builtin___clear_cache((char *)out->code_lo, (char *)out->code_hi);
    if (out->code_hi > out->code_lo && mprotect((void *)out->code_lo, out->code_hi - out->code_lo, PROT_READ | PROT_EXEC))
        return kiln_fail(err, KILN_ERR_SYSTEM, "ELF: mprotect of the code (R-X) failed");
    uintptr_t r0 = (uintptr_t)(b + im->bounds[1][0]), r1 = (uintptr_t)(b + im->bounds[1][1]);
    if (r1 > r0 && mprotect((void *)r0, r1 - r0, PROT_READ))
        return kiln_fail(err, KILN_ERR_SYSTEM, "ELF: mprotect of the constants (R--) failed");
    return KILN_OK;
}

kiln_status kiln_elf_load(const uint8_t *blob, size_t size, kiln_loaded_object *out, kiln_error *err) {
    memset(out, 0, sizeof *out);
    object_info o;
    image im;
    memset(&im, 0, sizeof im);
    rel_entry *rs = NULL;
    size_t nrs = 0, ngot = 0, nstub = 0;
    kiln_status st = inspect(blob, size, &o, err);
    if (st == KILN_OK) {
        im.offsets = calloc(o.nsections, sizeof *im.offsets);
        im.got_slot = malloc((o.nsymbols + 1) * sizeof *im.got_slot);
        im.stub_slot = malloc((o.nsymbols + 1) * sizeof *im.stub_slot);
        im.addr = calloc(o.nsymbols + 1, sizeof *im.addr);
        im.have_addr = calloc(o.nsymbols + 1, 1);
        if (!im.offsets || !im.got_slot || !im.stub_slot || !im.addr || !im.have_addr)
            st = kiln_fail(err, KILN_ERR_OUT_OF_MEMORY, "out of memory");
        for (size_t k = 0; st == KILN_OK && k < o.nsymbols; k++) im.got_slot[k] = im.stub_slot[k] = -1;
    }
    if (st == KILN_OK) st = collect_relocs(blob, &o, &im, &rs, &nrs, &ngot, &nstub, err);
    if (st == KILN_OK) st = lay_out(&o, &im, ngot, nstub, err);
    if (st == KILN_OK && im.total) st = map_and_fill(blob, &o, &im, rs, nrs, out, err);
    if (st != KILN_OK) kiln_elf_unload(out);
    free(rs);
    free(im.offsets);
    free(im.got_slot);
    free(im.stub_slot);
    free(im.addr);
    free(im.have_addr);
    free_info(&o);
    return st;
}

void kiln_elf_unload(kiln_loaded_object *obj) {
    if (obj->base) munmap(obj->base, obj->size);
    for (size_t i = 0; obj->names && i < obj->nsymbols; i++) free(obj->names[i]);
    free(obj->names);
    free(obj->addresses);
    memset(obj, 0, sizeof *obj);
}

static uintptr_t lookup(const kiln_loaded_object *obj, const char *name, kiln_error *err) {
    for (size_t i = 0; i < obj->nsymbols; i++)
        if (strcmp(obj->names[i], name) == 0) return obj->addresses[i];
    kiln_fail(err, KILN_ERR_ELF, "symbol '%s' is not defined by the loaded object", name);
    return 0;
}

uintptr_t kiln_elf_code_address(const kiln_loaded_object *obj, const char *name, kiln_error *err) {
    uintptr_t a = lookup(obj, name, err);
    if (a && !(obj->code_lo <= a && a < obj->code_hi)) {
        kiln_fail(err, KILN_ERR_ELF, "ELF: symbol '%s' is not in the object's code", name);
        return 0;
    }
    return a;
}

uintptr_t kiln_elf_data_address(const kiln_loaded_object *obj, const char *name, size_t size, kiln_error *err) {
    uintptr_t a = lookup(obj, name, err);
    if (a && !(obj->data_lo <= a && a + size <= obj->data_hi)) {
        kiln_fail(err, KILN_ERR_ELF, "ELF: symbol '%s' is not a writable %zu-byte global", name, size);
        return 0;
    }
    return a;
}
