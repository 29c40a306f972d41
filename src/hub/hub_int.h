/* Internals shared by hub.c and hub_tool.c (not for other modules). */
#ifndef AIOS_HUB_HUB_INT_H
#define AIOS_HUB_HUB_INT_H

#include "hub/hub.h"

#include <pthread.h>

/* a hub tool the resolver made: "author/name" at version, kept until
 * hub_close (the tool manager may be running it) */
struct hub_tool_ent {
    char key[2 * HUB_NAME_MAX + 56]; /* author/name@version */
    struct tool *t;
};

struct hub {
    char *dirs[2];   /* data_dir/hub/tools, data_dir/hub/agents */
    json_t *network; /* hub.network (array of names) or NULL */
    /* leaf lock: the resolved tools and publishing's temp names */
    pthread_mutex_t mu;
    struct hub_tool_ent *ents;
    size_t n_ents, cap_ents;
    unsigned long seq;
};

/* vsnprintf into buf (a path, a list): false when it did not fit (the
 * result is then cut); the callers' paths are bounded by the checks on
 * names, versions and file paths */
bool hub_pathf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
