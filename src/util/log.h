/* Leveled logging to stderr with a timestamp and module tag. Thread safe
 * (one write(2) per line). Level from AIOS_LOG=debug|info|warn|error. */
#ifndef AIOS_UTIL_LOG_H
#define AIOS_UTIL_LOG_H

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
void log_msg(enum log_level lvl, const char *mod, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The request this thread works for now (the HTTP request's x-request-id;
 * NULL or "": none): log lines written meanwhile carry it as
 * "request_id=<id>", and audit rows record it. The string must outlive
 * the setting. Returns the previous one, to put back. */
const char *log_set_request_id(const char *id);
const char *log_request_id(void);

#define LOG_DEBUG(mod, ...) log_msg(LOG_LEVEL_DEBUG, mod, __VA_ARGS__)
#define LOG_INFO(mod, ...) log_msg(LOG_LEVEL_INFO, mod, __VA_ARGS__)
#define LOG_WARN(mod, ...) log_msg(LOG_LEVEL_WARN, mod, __VA_ARGS__)
#define LOG_ERROR(mod, ...) log_msg(LOG_LEVEL_ERROR, mod, __VA_ARGS__)

#endif
