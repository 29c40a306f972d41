/* Error codes shared by every module: functions return 0 on success or one
 * of these negative values. aios_strerror() gives a short message. */
#ifndef AIOS_UTIL_ERR_H
#define AIOS_UTIL_ERR_H

enum {
    AIOS_OK = 0,
    AIOS_EINVAL = -1,     /* bad argument or malformed input */
    AIOS_ENOMEM = -2,     /* allocation failed */
    AIOS_EIO = -3,        /* file or socket error */
    AIOS_ENOTFOUND = -4,  /* no such model, route, id */
    AIOS_ETOOBIG = -5,    /* over a configured limit */
    AIOS_EBUSY = -6,      /* resource busy / queue full */
    AIOS_ESHUTDOWN = -7,  /* kernel is stopping */
    AIOS_ECANCELLED = -8, /* the caller went away */
    AIOS_EENGINE = -9,    /* the LLM engine failed */
    AIOS_EPERM = -10,     /* not allowed */
    AIOS_ECONFIG = -11,   /* configuration error */
    AIOS_ENOSPC = -12,    /* the disk (or a quota of the file system) is full */
};

const char *aios_strerror(int err);

#endif
