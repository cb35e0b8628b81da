#include <stdlib.h>
#include <string.h>
#include "zip_reader.h"

/* Zip layout (APPNOTE 6.3): local headers and data, then the central
 * directory, then (ZIP64 end record, ZIP64 locator,) the end record. */

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_END 0x06054b50u
#define SIG_END64 0x06064b50u
#define SIG_LOCATOR64 0x07064b50u
#define END_SIZE 22
#define LOCATOR64_SIZE 20
#define END64_SIZE 56
#define CENTRAL_SIZE 46
#define LOCAL_SIZE 30

static uint16_t rd16(const unsigned char *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t rd32(const unsigned char *p) {
  return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16;
}
static uint64_t rd64(const unsigned char *p) {
  return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

/* True when [off, off + len) lies inside the buffer. */
static int in_bounds(const zip_reader *z, uint64_t off, uint64_t len) {
  return off <= z->size && len <= z->size - off;
}

static int find_end(const zip_reader *z, size_t *at, cb_error *err) {
  if (z->size < END_SIZE)
    return cb_fail(err, "%s: %zu bytes is too short for a zip archive", z->label, z->size);
  size_t lowest = z->size > END_SIZE + 0xffff ? z->size - END_SIZE - 0xffff : 0;
  for (size_t i = z->size - END_SIZE + 1; i-- > lowest;) {
    if (rd32(z->data + i) == SIG_END && i + END_SIZE + rd16(z->data + i + 20) <= z->size) {
      *at = i;
      return 0;
    }
  }
  return cb_fail(err, "%s: no zip end-of-central-directory record (truncated file?)", z->label);
}

typedef struct central_dir {
  uint64_t count, size, offset;
} central_dir;

static int read_end64(const zip_reader *z, size_t end_at, central_dir *cd, cb_error *err) {
  if (end_at < LOCATOR64_SIZE || rd32(z->data + end_at - LOCATOR64_SIZE) != SIG_LOCATOR64)
    return cb_fail(err, "%s: the zip end record asks for ZIP64 but has no ZIP64 locator", z->label);
  uint64_t off = rd64(z->data + end_at - LOCATOR64_SIZE + 8);
  if (!in_bounds(z, off, END64_SIZE) || rd32(z->data + off) != SIG_END64)
    return cb_fail(err, "%s: ZIP64 end record offset %llu is invalid", z->label,
                   (unsigned long long)off);
  const unsigned char *p = z->data + off;
  cd->count = rd64(p + 32);
  cd->size = rd64(p + 40);
  cd->offset = rd64(p + 48);
  return 0;
}

static int read_central_dir(const zip_reader *z, central_dir *cd, cb_error *err) {
  size_t at = 0;
  if (find_end(z, &at, err)) return -1;
  const unsigned char *p = z->data + at;
  if (rd16(p + 4) != 0 || rd16(p + 6) != 0)
    return cb_fail(err, "%s: multi-disk zip archives are not supported", z->label);
  cd->count = rd16(p + 10);
  cd->size = rd32(p + 12);
  cd->offset = rd32(p + 16);
  if ((cd->count == 0xffff || cd->size == 0xffffffffu || cd->offset == 0xffffffffu) &&
      read_end64(z, at, cd, err))
    return -1;
  if (!in_bounds(z, cd->offset, cd->size))
    return cb_fail(err,
                   "%s: zip central directory (offset %llu, %llu bytes) lies outside the "
                   "%zu-byte file",
                   z->label, (unsigned long long)cd->offset, (unsigned long long)cd->size, z->size);
  if (cd->count > cd->size / CENTRAL_SIZE)
    return cb_fail(err, "%s: zip central directory claims %llu entries in %llu bytes", z->label,
                   (unsigned long long)cd->count, (unsigned long long)cd->size);
  return 0;
}

/* Replaces the 0xffffffff fields of an entry by its ZIP64 extra field values. */
static int apply_zip64(const zip_reader *z, zip_entry *e, const unsigned char *extra, size_t len,
                       cb_error *err) {
  int want =
      (e->usize == 0xffffffffu) + (e->csize == 0xffffffffu) + (e->local_offset == 0xffffffffu);
  if (!want) return 0;
  for (size_t i = 0; i + 4 <= len;) {
    uint16_t id = rd16(extra + i), n = rd16(extra + i + 2);
    if (i + 4 + n > len) break;
    if (id == 1) {
      const unsigned char *q = extra + i + 4;
      if (n < 8 * want)
        return cb_fail(err, "%s: entry '%s': ZIP64 extra field is too short", z->label, e->name);
      if (e->usize == 0xffffffffu) e->usize = rd64(q), q += 8;
      if (e->csize == 0xffffffffu) e->csize = rd64(q), q += 8;
      if (e->local_offset == 0xffffffffu) e->local_offset = rd64(q);
      return 0;
    }
    i += 4 + (size_t)n;
  }
  return cb_fail(err, "%s: entry '%s' needs a ZIP64 extra field, which is missing", z->label,
                 e->name);
}

static int read_entry(const zip_reader *z, uint64_t *at, uint64_t end, zip_entry *e,
                      cb_error *err) {
  if (end - *at < CENTRAL_SIZE || rd32(z->data + *at) != SIG_CENTRAL)
    return cb_fail(err, "%s: bad zip central directory entry at offset %llu", z->label,
                   (unsigned long long)*at);
  const unsigned char *p = z->data + *at;
  size_t name_len = rd16(p + 28), extra_len = rd16(p + 30), comment_len = rd16(p + 32);
  if (end - *at - CENTRAL_SIZE < name_len + extra_len + comment_len)
    return cb_fail(err, "%s: zip central directory entry at offset %llu is truncated", z->label,
                   (unsigned long long)*at);
  e->flags = rd16(p + 8);
  e->method = rd16(p + 10);
  e->crc = rd32(p + 16);
  e->csize = rd32(p + 20);
  e->usize = rd32(p + 24);
  e->local_offset = rd32(p + 42);
  e->name = malloc(name_len + 1);
  if (!e->name) return cb_fail(err, "%s: out of memory", z->label);
  memcpy(e->name, p + CENTRAL_SIZE, name_len);
  e->name[name_len] = 0;
  if (memchr(e->name, 0, name_len))
    return cb_fail(err, "%s: a zip entry name contains a NUL byte", z->label);
  *at += CENTRAL_SIZE + name_len + extra_len + comment_len;
  return apply_zip64(z, e, p + CENTRAL_SIZE + name_len, extra_len, err);
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const zip_entry *)a)->name, ((const zip_entry *)b)->name);
}

static int read_entries(zip_reader *z, const central_dir *cd, cb_error *err) {
  z->entries = calloc(cd->count ? cd->count : 1, sizeof(*z->entries));
  if (!z->entries) return cb_fail(err, "%s: out of memory", z->label);
  uint64_t at = cd->offset, end = cd->offset + cd->size;
  for (uint64_t i = 0; i < cd->count; i++) {
    z->n++;
    if (read_entry(z, &at, end, &z->entries[i], err)) return -1;
  }
  qsort(z->entries, z->n, sizeof(*z->entries), by_name);
  for (size_t i = 1; i < z->n; i++)
    if (strcmp(z->entries[i - 1].name, z->entries[i].name) == 0)
      return cb_fail(err, "%s: zip entry '%s' appears twice", z->label, z->entries[i].name);
  return 0;
}

int zip_open(zip_reader *z, const void *data, size_t size, const char *label, cb_error *err) {
  memset(z, 0, sizeof(*z));
  z->data = data;
  z->size = size;
  z->label = label;
  central_dir cd = {0};
  if (read_central_dir(z, &cd, err) || read_entries(z, &cd, err)) {
    zip_close(z);
    return -1;
  }
  return 0;
}

void zip_close(zip_reader *z) {
  for (size_t i = 0; i < z->n; i++)
    free(z->entries[i].name);
  free(z->entries);
  z->entries = NULL;
  z->n = 0;
}

zip_entry *zip_find(const zip_reader *z, const char *name) {
  zip_entry key = {.name = (char *)name};
  return z->n ? bsearch(&key, z->entries, z->n, sizeof(key), by_name) : NULL;
}

static uint32_t crc32_of(const unsigned char *p, size_t n) {
  static uint32_t table[256];
  static int ready;
  if (!ready) {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++)
        c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    ready = 1;
  }
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++)
    c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

static int check_local(const zip_reader *z, const zip_entry *e, uint64_t *data_at, cb_error *err) {
  if (!in_bounds(z, e->local_offset, LOCAL_SIZE) || rd32(z->data + e->local_offset) != SIG_LOCAL)
    return cb_fail(err, "%s: entry '%s': no local header at offset %llu", z->label, e->name,
                   (unsigned long long)e->local_offset);
  const unsigned char *p = z->data + e->local_offset;
  size_t name_len = rd16(p + 26), extra_len = rd16(p + 28);
  if (!in_bounds(z, e->local_offset + LOCAL_SIZE, name_len + extra_len) ||
      name_len != strlen(e->name) || memcmp(p + LOCAL_SIZE, e->name, name_len) != 0)
    return cb_fail(err, "%s: entry '%s': local header does not match the central directory",
                   z->label, e->name);
  *data_at = e->local_offset + LOCAL_SIZE + name_len + extra_len;
  return 0;
}

int zip_entry_data(zip_reader *z, zip_entry *e, const unsigned char **out, size_t *size,
                   cb_error *err) {
  if (e->flags & 1) return cb_fail(err, "%s: entry '%s' is encrypted", z->label, e->name);
  if (e->method != 0)
    return cb_fail(err,
                   "%s: entry '%s' is compressed (method %u); only stored entries are "
                   "supported, as torch.save writes them",
                   z->label, e->name, e->method);
  if (e->csize != e->usize)
    return cb_fail(err, "%s: stored entry '%s' has compressed size %llu != size %llu", z->label,
                   e->name, (unsigned long long)e->csize, (unsigned long long)e->usize);
  uint64_t at = 0;
  if (check_local(z, e, &at, err)) return -1;
  if (!in_bounds(z, at, e->usize))
    return cb_fail(err,
                   "%s: entry '%s' (%llu bytes at offset %llu) runs past the end of the "
                   "%zu-byte file",
                   z->label, e->name, (unsigned long long)e->usize, (unsigned long long)at,
                   z->size);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  e->crc_checked = 1; /* lets mutated inputs reach the pickle machine */
#endif
  if (!e->crc_checked && crc32_of(z->data + at, e->usize) != e->crc)
    return cb_fail(err, "%s: entry '%s' fails its CRC-32 check (corrupt file)", z->label, e->name);
  e->crc_checked = 1;
  *out = z->data + at;
  *size = (size_t)e->usize;
  return 0;
}
