/* Clocks and file-system helpers. */
#ifndef AIOS_UTIL_UTIL_H
#define AIOS_UTIL_UTIL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

int64_t util_now_us(void);  /* monotonic microseconds */
int64_t util_wall_us(void); /* wall-clock microseconds since the epoch */
/* mkdir -p; 0 or AIOS_EIO */
int util_mkdirs(const char *path);
/* ${XDG_CACHE_HOME:-$HOME/.cache}/aios, malloc'd */
char *util_cache_dir(void);
/* Append n bytes to a growable, NUL-terminated buffer (*buf, *len, *cap),
 * doubling its capacity as needed. 0 or AIOS_ENOMEM (buffer unchanged). */
int util_buf_append(char **buf, size_t *len, size_t *cap, const void *data, size_t n);

#endif
