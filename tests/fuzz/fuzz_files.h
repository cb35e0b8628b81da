/* Temporary files for the fuzz targets whose readers take a path. */
#ifndef CBRICK_FUZZ_FILES_H
#define CBRICK_FUZZ_FILES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* A fresh /tmp/cbrick-fuzz-STEM-XXXXXX into path; aborts (the fuzzer's own set-up failed). */
static inline void fuzz_temp_path(char *path, size_t cap, const char *stem) {
  snprintf(path, cap, "/tmp/cbrick-fuzz-%s-XXXXXX", stem);
  int fd = mkstemp(path);
  if (fd < 0) abort();
  close(fd);
}

/* The input bytes as the file at path. */
static inline void fuzz_write_input(const char *path, const uint8_t *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  fclose(f);
}

#endif
