/* Clocks and file-system helpers. */
#ifndef AIOS_UTIL_UTIL_H
#define AIOS_UTIL_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>

int64_t util_now_us(void);  /* monotonic microseconds */
int64_t util_wall_us(void); /* wall-clock microseconds since the epoch */
/* mkdir -p; 0 or AIOS_EIO */
int util_mkdirs(const char *path);
/* ${XDG_CACHE_HOME:-$HOME/.cache}/aios, malloc'd */
char *util_cache_dir(void);

#endif
