#ifndef CBRICK_ERROR_H
#define CBRICK_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#define CB_API __attribute__((visibility("default")))
#define CB_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

#define CB_ERROR_MAX 2048

/* The one error type carried up from every failure. Functions returning int
 * give 0 on success and -1 on failure; functions returning a pointer give
 * NULL on failure. Either way the message is in *err. */
typedef struct cb_error {
  int failed;
  char msg[CB_ERROR_MAX];
} cb_error;

/* Sets the message. */
CB_API void cb_failv(cb_error *err, const char *fmt, va_list ap);

/* Sets the message and returns -1, so that `return cb_fail(err, ...);` works. Defined here so
 * that callers (and static analysers) see that it always returns -1. */
static inline CB_PRINTF(2, 3) int cb_fail(cb_error *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cb_failv(err, fmt, ap);
  va_end(ap);
  return -1;
}
/* Puts context before an existing message: "configs/a.json: " + msg. */
CB_API int cb_error_prefix(cb_error *err, const char *fmt, ...) CB_PRINTF(2, 3);
CB_API void cb_error_clear(cb_error *err);

/* Warnings (deprecations, allowed failed imports) go to stderr unless silenced. */
CB_API void cb_warn(const char *fmt, ...) CB_PRINTF(1, 2);
CB_API void cb_set_quiet(int quiet);

#endif
