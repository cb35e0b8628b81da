#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cbrick/kernels.h"

/* Python's repr(float): the shortest digits that read back to v, in fixed
 * notation for exponents -4..15 and as 1e-05 otherwise. */
CB_API void cb_format_pyfloat(double v, char *buf, size_t cap) {
  if (!cap) return;
  if (isnan(v)) {
    snprintf(buf, cap, "nan");
    return;
  }
  if (isinf(v)) {
    snprintf(buf, cap, v < 0 ? "-inf" : "inf");
    return;
  }
  char sci[64];
  for (int prec = 0; prec < 17; prec++) {
    snprintf(sci, sizeof sci, "%.*e", prec, v);
    if (strtod(sci, NULL) == v) break;
  }
  char *e = strchr(sci, 'e');
  int exp10 = atoi(e + 1);
  *e = '\0';
  char digits[32];
  size_t nd = 0;
  bool neg = sci[0] == '-';
  for (const char *c = sci; *c; c++)
    if (*c >= '0' && *c <= '9') digits[nd++] = *c;
  digits[nd] = '\0';
  if (exp10 < -4 || exp10 >= 16) {
    if (nd == 1)
      snprintf(buf, cap, "%s%ce%c%02d", neg ? "-" : "", digits[0], exp10 < 0 ? '-' : '+',
               abs(exp10));
    else
      snprintf(buf, cap, "%s%c.%se%c%02d", neg ? "-" : "", digits[0], digits + 1,
               exp10 < 0 ? '-' : '+', abs(exp10));
    return;
  }
  char out[64];
  size_t o = 0;
  if (neg) out[o++] = '-';
  if (exp10 < 0) {
    out[o++] = '0';
    out[o++] = '.';
    for (int i = -1; i > exp10; i--)
      out[o++] = '0';
    for (size_t i = 0; i < nd; i++)
      out[o++] = digits[i];
  } else {
    for (int i = 0; i <= exp10; i++)
      out[o++] = (size_t)i < nd ? digits[i] : '0';
    out[o++] = '.';
    if ((size_t)exp10 + 1 < nd)
      for (size_t i = (size_t)exp10 + 1; i < nd; i++)
        out[o++] = digits[i];
    else
      out[o++] = '0';
  }
  out[o] = '\0';
  snprintf(buf, cap, "%s", out);
}
