#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "cbrick/io.h"

/* An ordered name -> tensor map: entries keep insertion order, and an
 * open-addressing hash table of entry indices answers lookups by name. */
struct cb_weights {
  int n, cap;
  char **names;
  cb_tensor **tensors;
  int *slots; /* index + 1, 0 = empty; size slot_cap (a power of two) */
  int slot_cap;
  json_t *metadata;
};

static uint64_t name_hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static void slots_insert(int *slots, int slot_cap, const char *name, int index) {
  size_t mask = (size_t)slot_cap - 1;
  size_t i = name_hash(name) & mask;
  while (slots[i])
    i = (i + 1) & mask;
  slots[i] = index + 1;
}

static int slots_grow(cb_weights *w, cb_error *err) {
  int cap = w->slot_cap ? w->slot_cap * 2 : 64;
  int *slots = calloc((size_t)cap, sizeof(int));
  if (!slots) return cb_fail(err, "out of memory growing a weights table to %d entries", cap);
  for (int i = 0; i < w->n; i++)
    slots_insert(slots, cap, w->names[i], i);
  free(w->slots);
  w->slots = slots;
  w->slot_cap = cap;
  return 0;
}

static int entries_grow(cb_weights *w, cb_error *err) {
  int cap = w->cap ? w->cap * 2 : 32;
  char **names = realloc(w->names, (size_t)cap * sizeof(*names));
  if (names) w->names = names;
  cb_tensor **tensors = realloc(w->tensors, (size_t)cap * sizeof(*tensors));
  if (tensors) w->tensors = tensors;
  if (!names || !tensors) return cb_fail(err, "out of memory growing weights to %d entries", cap);
  w->cap = cap;
  return 0;
}

CB_API cb_weights *cb_weights_new(cb_error *err) {
  cb_weights *w = calloc(1, sizeof(*w));
  if (!w) cb_fail(err, "out of memory allocating weights");
  return w;
}

CB_API void cb_weights_free(cb_weights *w) {
  if (!w) return;
  for (int i = 0; i < w->n; i++) {
    free(w->names[i]);
    cb_tensor_free(w->tensors[i]);
  }
  free(w->names);
  free(w->tensors);
  free(w->slots);
  json_decref(w->metadata);
  free(w);
}

CB_API int cb_weights_count(const cb_weights *w) {
  return w ? w->n : 0;
}

CB_API const char *cb_weights_name(const cb_weights *w, int i) {
  return w && i >= 0 && i < w->n ? w->names[i] : NULL;
}

CB_API const cb_tensor *cb_weights_tensor(const cb_weights *w, int i) {
  return w && i >= 0 && i < w->n ? w->tensors[i] : NULL;
}

CB_API int cb_weights_find(const cb_weights *w, const char *name) {
  if (!w || !w->slot_cap || !name) return -1;
  size_t mask = (size_t)w->slot_cap - 1;
  for (size_t i = name_hash(name) & mask; w->slots[i]; i = (i + 1) & mask) {
    int index = w->slots[i] - 1;
    if (strcmp(w->names[index], name) == 0) return index;
  }
  return -1;
}

CB_API const cb_tensor *cb_weights_get(const cb_weights *w, const char *name) {
  int i = cb_weights_find(w, name);
  return i < 0 ? NULL : w->tensors[i];
}

CB_API int cb_weights_add(cb_weights *w, const char *name, cb_tensor *t, cb_error *err) {
  if (!t) return cb_fail(err, "weights: no tensor given for '%s'", name ? name : "(null)");
  if (!name) {
    cb_tensor_free(t);
    return cb_fail(err, "weights: a tensor has no name");
  }
  if (cb_weights_find(w, name) >= 0) {
    cb_tensor_free(t);
    return cb_fail(err, "weights: duplicate key '%s'", name);
  }
  if ((w->n == w->cap && entries_grow(w, err)) ||
      ((w->n + 1) * 2 > w->slot_cap && slots_grow(w, err))) {
    cb_tensor_free(t);
    return -1;
  }
  char *copy = strdup(name);
  if (!copy) {
    cb_tensor_free(t);
    return cb_fail(err, "out of memory adding '%s' to weights", name);
  }
  w->names[w->n] = copy;
  w->tensors[w->n] = t;
  slots_insert(w->slots, w->slot_cap, copy, w->n);
  w->n++;
  return 0;
}

CB_API json_t *cb_weights_metadata(const cb_weights *w) {
  return w ? w->metadata : NULL;
}

CB_API int cb_weights_set_metadata(cb_weights *w, json_t *metadata, cb_error *err) {
  if (metadata) {
    const char *key;
    json_t *value;
    if (!json_is_object(metadata)) return cb_fail(err, "weights metadata: expected an object");
    json_object_foreach(metadata, key, value) {
      if (!json_is_string(value))
        return cb_fail(err, "weights metadata: '%s' must be a string", key);
    }
  }
  json_incref(metadata);
  json_decref(w->metadata);
  w->metadata = metadata;
  return 0;
}
