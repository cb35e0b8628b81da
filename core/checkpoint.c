#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cbrick/checkpoint.h"
#include "prefix.h"
#include "pth.h"

/* Pickle files written by torch.save before 1.6 start with PROTO 2 and the
 * magic number 0x1950a86a20f9469cfc6c as a LONG1. */
static const unsigned char legacy_magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                             0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

static int is_zip(const unsigned char *p, size_t n) {
  return n >= 4 && p[0] == 'P' && p[1] == 'K' &&
         ((p[2] == 3 && p[3] == 4) || (p[2] == 5 && p[3] == 6));
}

static int is_legacy(const unsigned char *p, size_t n) {
  return n >= sizeof(legacy_magic) && memcmp(p, legacy_magic, sizeof(legacy_magic)) == 0;
}

static int legacy_error(const char *name, cb_error *err) {
  return cb_fail(err,
                 "%s: legacy (pre-1.6) .pth format is not supported; re-save it with "
                 "torch.save in PyTorch >= 1.6",
                 name);
}

CB_API cb_weights *cb_checkpoint_read_memory(const void *data, size_t size, const char *name,
                                             cb_error *err) {
  const unsigned char *p = data;
  if (!name) name = "(memory)";
  if (is_zip(p, size)) return pth_read_memory(p, size, name, err);
  if (is_legacy(p, size))
    legacy_error(name, err);
  else
    cb_fail(err, "%s: not a PyTorch zip checkpoint (no 'PK' zip signature)", name);
  return NULL;
}

static cb_weights *read_mapped(int fd, const char *path, cb_error *err) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    cb_fail(err, "%s: cannot stat: %s", path, strerror(errno));
    return NULL;
  }
  if (st.st_size == 0) {
    cb_fail(err, "%s: file is empty", path);
    return NULL;
  }
  void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) {
    cb_fail(err, "%s: cannot map the file: %s", path, strerror(errno));
    return NULL;
  }
  cb_weights *w = cb_checkpoint_read_memory(map, (size_t)st.st_size, path, err);
  munmap(map, (size_t)st.st_size);
  return w;
}

CB_API cb_weights *cb_checkpoint_read(const char *path, cb_error *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    cb_fail(err, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  unsigned char head[sizeof(legacy_magic)];
  ssize_t n = read(fd, head, sizeof(head));
  int pth = n > 0 && (is_zip(head, (size_t)n) || is_legacy(head, (size_t)n));
  cb_weights *w = pth ? read_mapped(fd, path, err) : NULL;
  close(fd);
  if (n < 0) {
    cb_fail(err, "%s: cannot read: %s", path, strerror(errno));
    return NULL;
  }
  return pth ? w : cb_safetensors_read(path, err);
}

/* A copy of w whose names are rewritten by rename (NULL drops the tensor). */
typedef const char *(*renamer)(const char *name, const char *arg);

static cb_weights *copy_renamed(const cb_weights *w, renamer rename, const char *arg,
                                cb_error *err) {
  cb_weights *out = cb_weights_new(err);
  if (!out) return NULL;
  if (cb_weights_metadata(w) && cb_weights_set_metadata(out, cb_weights_metadata(w), err))
    goto fail;
  for (int i = 0; i < cb_weights_count(w); i++) {
    const char *name = rename(cb_weights_name(w, i), arg);
    if (!name) continue;
    cb_tensor *t = cb_tensor_clone(cb_weights_tensor(w, i), err);
    if (!t || cb_weights_add(out, name, t, err)) goto fail;
  }
  return out;
fail:
  cb_weights_free(out);
  return NULL;
}

static const char *after_prefix(const char *name, const char *prefix) {
  size_t n = strlen(prefix);
  return strncmp(name, prefix, n) == 0 ? name + n : NULL;
}

static const char *without_module(const char *name, const char *unused) {
  (void)unused;
  return strncmp(name, "module.", 7) == 0 ? name + 7 : name;
}

CB_API cb_weights *cb_checkpoint_strip_prefix(const cb_weights *w, const char *prefix,
                                              cb_error *err) {
  char dotted[512];
  cb_prefix_with_dot(prefix, dotted, sizeof dotted);
  return copy_renamed(w, after_prefix, dotted, err);
}

CB_API cb_weights *cb_checkpoint_strip_module(const cb_weights *w, cb_error *err) {
  return copy_renamed(w, without_module, NULL, err);
}
