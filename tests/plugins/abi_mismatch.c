/* A plugin that claims an ABI this library does not provide. */
#include <cbrick.h>

static const cb_plugin_entry entries[] = {{NULL, NULL, NULL, NULL}};
CB_API const cb_plugin_info cbrick_plugin_info = {CB_ABI_VERSION + 41, "abi_mismatch", "wrong ABI",
                                                  entries, NULL};
