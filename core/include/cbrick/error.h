#ifndef CBRICK_ERROR_H
#define CBRICK_ERROR_H

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

/* Sets the message and returns -1, so that `return cb_fail(err, ...);` works. */
CB_API int cb_fail(cb_error *err, const char *fmt, ...) CB_PRINTF(2, 3);
/* Puts context before an existing message: "configs/a.json: " + msg. */
CB_API int cb_error_prefix(cb_error *err, const char *fmt, ...) CB_PRINTF(2, 3);
CB_API void cb_error_clear(cb_error *err);

/* Warnings (deprecations, allowed failed imports) go to stderr unless silenced. */
CB_API void cb_warn(const char *fmt, ...) CB_PRINTF(1, 2);
CB_API void cb_set_quiet(int quiet);

#endif
