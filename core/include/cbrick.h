/* cbrick: assemble neural-network backbones from JSON configs through
 * string-keyed registries whose layers live in shared-object plugins.
 * This is the only header a plugin or an application needs. */
#ifndef CBRICK_H
#define CBRICK_H

#include "cbrick/error.h"
#include "cbrick/tensor.h"
#include "cbrick/module.h"
#include "cbrick/args.h"
#include "cbrick/registry.h"
#include "cbrick/plugin.h"
#include "cbrick/kernels.h"
#include "cbrick/init.h"
#include "cbrick/config.h"
#include "cbrick/io.h"
#include "cbrick/image.h"
#include "cbrick/plan.h"
#include "cbrick/checkpoint.h"

#endif
