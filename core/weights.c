#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "weights_internal.h"

/* An ordered name -> tensor map: entries keep insertion order, and an
 * open-addressing hash table of entry indices answers lookups by name. */
struct cb_weights {
  int n, cap;
  char **names;
  cb_tensor **tensors;
  bool *borrowed; /* the tensor's data belongs to a mapping or to other weights */
  int *slots;     /* index + 1, 0 = empty; size slot_cap (a power of two) */
  int slot_cap;
  json_t *metadata;
  void *map; /* a read-only file mapping that borrowed tensors may point into */
  size_t map_len;
};

static void tensor_release(cb_tensor *t, bool borrowed) {
  if (borrowed)
    free(t);
  else
    cb_tensor_free(t);
}

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
  bool *borrowed = realloc(w->borrowed, (size_t)cap * sizeof(*borrowed));
  if (borrowed) w->borrowed = borrowed;
  if (!names || !tensors || !borrowed)
    return cb_fail(err, "out of memory growing weights to %d entries", cap);
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
    tensor_release(w->tensors[i], w->borrowed[i]);
  }
  free(w->names);
  free(w->tensors);
  free(w->borrowed);
  free(w->slots);
  json_decref(w->metadata);
  if (w->map) munmap(w->map, w->map_len);
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

static int entry_add(cb_weights *w, const char *name, cb_tensor *t, bool borrowed, cb_error *err) {
  if (!name) {
    tensor_release(t, borrowed);
    return cb_fail(err, "weights: a tensor has no name");
  }
  if (cb_weights_find(w, name) >= 0) {
    tensor_release(t, borrowed);
    return cb_fail(err, "weights: duplicate key '%s'", name);
  }
  if ((w->n == w->cap && entries_grow(w, err)) ||
      ((w->n + 1) * 2 > w->slot_cap && slots_grow(w, err))) {
    tensor_release(t, borrowed);
    return -1;
  }
  char *copy = strdup(name);
  if (!copy) {
    tensor_release(t, borrowed);
    return cb_fail(err, "out of memory adding '%s' to weights", name);
  }
  w->names[w->n] = copy;
  w->tensors[w->n] = t;
  w->borrowed[w->n] = borrowed;
  slots_insert(w->slots, w->slot_cap, copy, w->n);
  w->n++;
  return 0;
}

CB_API int cb_weights_add(cb_weights *w, const char *name, cb_tensor *t, cb_error *err) {
  if (!t) return cb_fail(err, "weights: no tensor given for '%s'", name ? name : "(null)");
  return entry_add(w, name, t, false, err);
}

int cb_weights_add_borrowed(cb_weights *w, const char *name, const cb_tensor *t, cb_error *err) {
  cb_tensor *view = malloc(sizeof *view);
  if (!view) return cb_fail(err, "out of memory adding '%s' to weights", name ? name : "(null)");
  *view = *t;
  return entry_add(w, name, view, true, err);
}

void cb_weights_keep_mapping(cb_weights *w, void *addr, size_t len) {
  w->map = addr;
  w->map_len = len;
}

CB_API bool cb_weights_is_mapped(const cb_weights *w, int i) {
  if (!w || i < 0 || i >= w->n || !w->borrowed[i] || !w->map) return false;
  const char *data = w->tensors[i]->data, *map = w->map;
  return data >= map && data + cb_tensor_nbytes(w->tensors[i]) <= map + w->map_len;
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
