/* A shared object that is not a cbrick plugin: it exports no entry point. */
#include <cbrick.h>

CB_API int not_a_plugin(void) {
  return 1;
}
