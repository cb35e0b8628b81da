#ifndef CBRICK_ZIP_READER_H
#define CBRICK_ZIP_READER_H

#include <stddef.h>
#include <stdint.h>
#include "cbrick/error.h"

/* A read-only view of a zip archive held in memory. Only stored
 * (uncompressed) entries can be read; ZIP64 records are understood. */
typedef struct zip_entry {
  char *name;
  uint16_t method, flags;
  uint32_t crc;
  uint64_t csize, usize, local_offset;
  int crc_checked;
} zip_entry;

typedef struct zip_reader {
  const unsigned char *data;
  size_t size;
  const char *label;  /* the file name used in messages */
  zip_entry *entries; /* sorted by name */
  size_t n;
} zip_reader;

/* Parses the central directory; the buffer must outlive the reader. */
int zip_open(zip_reader *z, const void *data, size_t size, const char *label, cb_error *err);
void zip_close(zip_reader *z);
zip_entry *zip_find(const zip_reader *z, const char *name);
/* The bytes of a stored entry, bounds- and CRC-checked. */
int zip_entry_data(zip_reader *z, zip_entry *e, const unsigned char **out, size_t *size,
                   cb_error *err);

#endif
