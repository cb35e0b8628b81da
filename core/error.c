#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cbrick/error.h"

static int quiet;

int cb_fail(cb_error *err, const char *fmt, ...) {
  if (!err) return -1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  err->failed = 1;
  return -1;
}

int cb_error_prefix(cb_error *err, const char *fmt, ...) {
  if (!err) return -1;
  char prefix[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  size_t plen = strlen(prefix), mlen = strlen(err->msg);
  if (plen >= CB_ERROR_MAX) plen = CB_ERROR_MAX - 1;
  if (plen + mlen >= CB_ERROR_MAX) mlen = CB_ERROR_MAX - 1 - plen;
  memmove(err->msg + plen, err->msg, mlen);
  memcpy(err->msg, prefix, plen);
  err->msg[plen + mlen] = '\0';
  err->failed = 1;
  return -1;
}

void cb_error_clear(cb_error *err) {
  if (!err) return;
  err->failed = 0;
  err->msg[0] = '\0';
}

void cb_set_quiet(int q) {
  quiet = q;
}

void cb_warn(const char *fmt, ...) {
  if (quiet) return;
  va_list ap;
  va_start(ap, fmt);
  fputs("cbrick: warning: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}
