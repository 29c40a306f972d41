/* The local hub: Cerebrum's tool hub and agent hub served from data_dir.
 * See hub.c (the versioned store, Cerebrum's package shapes) and
 * hub_tool.c (Cerebrum's cache layout for agents, hub tools run by the
 * kernel through a Python host process). */
#ifndef AIOS_HUB_HUB_H
#define AIOS_HUB_HUB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct hub;
struct tool;

enum hub_kind { HUB_TOOL, HUB_AGENT };

/* Limits on what one package may hold. */
#define HUB_MAX_FILES 256
#define HUB_MAX_PATH 200
#define HUB_NAME_MAX 64

/* Open (create) data_dir/hub. section: the `hub:` config mapping or NULL:
 *   network: ["author/name", ...] or ["*"]  hub tools that may use the network
 *            (when their config.json declares it too); default none
 * 0, or AIOS_ECONFIG / AIOS_EIO with a message. */
int hub_open(struct hub **out, const char *data_dir, json_t *section, char *err, size_t errlen);
/* After the tool manager stopped (its tools point into the hub). NULL ok. */
void hub_close(struct hub *h);

/* Publish a package in Cerebrum's upload shape ({author, name, version,
 * license, entry, module, files: [{path, content (base64)}], ...}).
 * Versions are immutable. 0 with *info {author, name, version}, or
 * AIOS_EINVAL (malformed: the message names the field), AIOS_EBUSY (that
 * version exists: 409), AIOS_ETOOBIG, AIOS_EIO, AIOS_ENOMEM. */
int hub_publish(struct hub *h, enum hub_kind kind, json_t *payload, json_t **info, char *err,
                size_t errlen);
/* The package (Cerebrum's download shape: the upload payload) of
 * author/name at version (NULL: the newest). 0, AIOS_EINVAL (bad name),
 * AIOS_ENOTFOUND. */
int hub_get(struct hub *h, enum hub_kind kind, const char *author, const char *name,
            const char *version, json_t **out, char *err, size_t errlen);
/* Every version: {"author/name/version": {author, name, version,
 * description, license, requirements}}; for agents one more entry at the
 * end, "aios_total": N (Cerebrum's agent list drops the last value). */
json_t *hub_list(struct hub *h, enum hub_kind kind);
/* Whether a version newer than current exists. 0, AIOS_ENOTFOUND, AIOS_EINVAL. */
int hub_check_updates(struct hub *h, enum hub_kind kind, const char *author, const char *name,
                      const char *current, bool *newer, char *err, size_t errlen);

/* Versions as Cerebrum compares them (integer parts; missing parts are 0):
 * <0, 0, >0. Pure. */
int hub_version_cmp(const char *a, const char *b);
/* A name part (author or name) the store accepts: [A-Za-z0-9_.-], 1 to
 * HUB_NAME_MAX bytes, not starting with '.'. Pure. */
bool hub_name_ok(const char *s);
/* A version the store accepts: 1 to 4 dot-separated integers. Pure. */
bool hub_version_ok(const char *s);
/* A file path inside a package: relative, no empty, "." or ".." segment,
 * no backslash, at most HUB_MAX_PATH bytes. Pure. */
bool hub_path_ok(const char *s);
/* Strict base64 (RFC 4648, padding optional). Returns malloc'd bytes
 * with *n, or NULL when malformed. Pure. */
unsigned char *hub_b64_decode(const char *s, size_t len, size_t *n);

/* ---- hub_tool.c ---- */

/* A stored zip archive (method 0) of metadata.json plus files, as
 * Cerebrum's ToolPackage/AgentPackage write them. 0 or AIOS_EIO / ENOMEM. */
struct hub_zip_entry {
    const char *name;
    const unsigned char *data;
    size_t n;
};
int hub_zip_write(const char *path, const struct hub_zip_entry *e, size_t n, char *err,
                  size_t errlen);

/* Fill cache_home (a run's XDG_CACHE_HOME) with the newest version of
 * every hub tool in Cerebrum's layout: cache_home/cerebrum_tools/
 * <author>/<name>/<version with '-'>.tool; uid > 0: the files and folders
 * are handed to it. 0 or AIOS_EIO with a message. */
int hub_fill_cache(struct hub *h, const char *cache_home, uid_t uid, char *err, size_t errlen);
/* The folder of hub agent ref ("author/name", newest version), malloc'd,
 * or NULL. */
char *hub_agent_dir(struct hub *h, const char *ref);

/* The tool manager's resolver (tool_resolve_fn; ud: the hub): a name the
 * registry does not know that names a hub tool ("author/name", or a bare
 * name only one author publishes) becomes a tool run by the Python host,
 * newest version, with the schema of its get_tool_call_format(). 0 with
 * *out (owned by the hub until hub_close), AIOS_ENOTFOUND (not a hub tool),
 * or another AIOS_E* with a message (it cannot run: e.g. missing Python
 * packages, which are named). Runs on a TOOL pool thread (may spawn the
 * host once to learn the schema). */
int hub_tool_resolve(void *ud, const char *name, struct tool **out, char *err, size_t errlen);

/* The hub tool a call name means, as "author/name" into out: the name
 * itself when it has a '/', a bare name when exactly one author publishes
 * it. 0, AIOS_ENOTFOUND (not in the hub), AIOS_EINVAL (ambiguous). No
 * process is started (the API checks offered tools with it). */
int hub_tool_canonical(struct hub *h, const char *name, char *out, size_t outlen);

/* internal: the store's folders */
const char *hub_root(const struct hub *h, enum hub_kind kind);
/* internal: the newest version of author/name into ver (""): 0 or AIOS_ENOTFOUND */
int hub_newest(struct hub *h, enum hub_kind kind, const char *author, const char *name,
               char *ver, size_t verlen);
/* internal: whether tool author/name may use the network (hub.network) */
bool hub_network_allowed(const struct hub *h, const char *tool);
/* internal: the hub tools the resolver made (hub_tool.c) */
void hub_tools_free(struct hub *h);

#endif
