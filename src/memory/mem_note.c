/* Memory notes: construction, size accounting and the JSON shapes the AIOS
 * protocol answers with.
 *
 * Field names and defaults follow A-MEM's MemoryNote as the AIOS reference
 * uses it (category "Uncategorized", context "General", timestamps as
 * YYYYMMDDHHMM strings). The reference stamps local time; we stamp UTC so a
 * kernel's notes do not depend on its time zone.
 *
 * Ownership: a note owns all its strings and JSON values. No locking: a note
 * is reached only through its agent's working set (under the agent's lock)
 * or is private to one thread. */
#include "memory/mem_note.h"

#include "util/err.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct mem_note *mem_note_new(void)
{
    struct mem_note *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->keywords = json_array();
    n->tags = json_array();
    n->links = json_array();
    n->extra = json_object();
    n->category = strdup("Uncategorized");
    n->context = strdup("General");
    if (!n->keywords || !n->tags || !n->links || !n->extra || !n->category || !n->context) {
        mem_note_free(n);
        return NULL;
    }
    return n;
}

void mem_note_free(struct mem_note *n)
{
    if (!n) return;
    free(n->id);
    free(n->content);
    json_decref(n->keywords);
    json_decref(n->tags);
    free(n->category);
    free(n->context);
    json_decref(n->links);
    json_decref(n->extra);
    free(n);
}

static size_t json_bytes(json_t *j)
{
    if (!j) return 0;
    size_t n = 0;
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) n += 16 + (json_is_string(v) ? json_string_length(v) : json_bytes(v));
        return n + 16;
    }
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) n += 32 + strlen(k) + json_bytes(v);
        return n + 16;
    }
    if (json_is_string(j)) return json_string_length(j) + 16;
    return 16;
}

size_t mem_note_bytes(const struct mem_note *n)
{
    size_t b = sizeof *n + 128; /* the cache entry and its map/heap slots */
    if (n->id) b += strlen(n->id) + 1;
    if (n->content) b += strlen(n->content) + 1;
    if (n->category) b += strlen(n->category) + 1;
    if (n->context) b += strlen(n->context) + 1;
    b += json_bytes(n->keywords) + json_bytes(n->tags) + json_bytes(n->links) + json_bytes(n->extra);
    return b;
}

json_t *mem_note_metadata(const struct mem_note *n)
{
    json_t *m = json_deep_copy(n->extra ? n->extra : json_object());
    if (!m) return NULL;
    json_object_set_new(m, "keywords", json_deep_copy(n->keywords));
    json_object_set_new(m, "tags", json_deep_copy(n->tags));
    json_object_set_new(m, "category", json_string(n->category));
    json_object_set_new(m, "context", json_string(n->context));
    json_object_set_new(m, "timestamp", json_string(n->timestamp));
    json_object_set_new(m, "last_accessed", json_string(n->last_accessed));
    json_object_set_new(m, "links", json_deep_copy(n->links));
    json_object_set_new(m, "retrieval_count", json_integer(n->retrieval_count));
    return m;
}

json_t *mem_note_result(const struct mem_note *n, double score)
{
    return json_pack("{s:s,s:s,s:O,s:O,s:s,s:s,s:s,s:f}", "memory_id", n->id, "content",
                     n->content, "keywords", n->keywords, "tags", n->tags, "category", n->category,
                     "context", n->context, "timestamp", n->timestamp, "score", score);
}

json_t *mem_note_raw(const struct mem_note *n, double score)
{
    return json_pack("{s:s,s:s,s:s,s:O,s:O,s:I,s:s,s:s,s:s,s:[],s:s,s:O,s:f}", "id", n->id,
                     "memory_id", n->id, "content", n->content, "keywords", n->keywords, "links",
                     n->links, "retrieval_count", (json_int_t)n->retrieval_count, "timestamp",
                     n->timestamp, "last_accessed", n->last_accessed, "context", n->context,
                     "evolution_history", "category", n->category, "tags", n->tags, "score",
                     score);
}

void mem_ts_now(char out[MEM_TS_LEN])
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (strftime(out, MEM_TS_LEN, "%Y%m%d%H%M", &tm) == 0) snprintf(out, MEM_TS_LEN, "000000000000");
}

int mem_uuid(char out[37])
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r <= 0) return AIOS_EIO;
        got += (size_t)r;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

int mem_str_list(json_t *v, const char *field, json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    json_t *a = json_array();
    if (!a) return AIOS_ENOMEM;
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_string(e)) {
                snprintf(err, errlen, "%s must be a list of strings (item %zu is not a string)",
                         field, i);
                json_decref(a);
                return AIOS_EINVAL;
            }
            json_array_append(a, e);
        }
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        while (*s) {
            const char *e = strchr(s, ',');
            size_t len = e ? (size_t)(e - s) : strlen(s);
            const char *b = s, *f = s + len;
            while (b < f && isspace((unsigned char)*b)) b++;
            while (f > b && isspace((unsigned char)f[-1])) f--;
            if (f > b) json_array_append_new(a, json_stringn(b, (size_t)(f - b)));
            s += len;
            if (*s == ',') s++;
        }
    } else {
        snprintf(err, errlen, "%s must be a list of strings", field);
        json_decref(a);
        return AIOS_EINVAL;
    }
    *out = a;
    return 0;
}

static const char *const k_stop[] = {
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "but", "by", "can", "could", "did", "do", "does",
    "doing", "for", "from", "had", "has", "have", "he", "her", "here", "him", "his", "how", "i",
    "if", "in", "into", "is", "it", "its", "just", "me", "more", "most", "my", "no", "nor", "not",
    "now", "of", "on", "only", "or", "other", "our", "out", "over", "own", "same", "she",
    "should", "so", "some", "such", "than", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "those", "to", "too", "under", "until", "up", "very", "was", "we",
    "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with",
    "would", "you", "your"};

bool mem_is_stop_word(const char *w, size_t len)
{
    if (len == 0 || len > 7) return false;
    char low[8];
    for (size_t i = 0; i < len; i++) low[i] = (char)tolower((unsigned char)w[i]);
    low[len] = 0;
    size_t lo = 0, hi = sizeof k_stop / sizeof k_stop[0];
    while (lo < hi) { /* the list is sorted */
        size_t mid = (lo + hi) / 2;
        int c = strcmp(low, k_stop[mid]);
        if (!c) return true;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return false;
}
