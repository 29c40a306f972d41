/* Corpus replay for the plain build: feeds every file of the directories
 * (or the files) named on the command line to LLVMFuzzerTestOneInput once,
 * in name order, after LLVMFuzzerInitialize. A crash, a sanitizer report
 * (in a sanitizer build) or an assertion fails the ctest; it prints the
 * file it was running first so the input is known. */
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (!buf) return -1;
    fprintf(stderr, "replay: %s\n", path);
    /* an exact-size copy, so that ASan sees reads past the input */
    uint8_t *in = malloc(n ? n : 1);
    if (!in) {
        free(buf);
        return -1;
    }
    memcpy(in, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(in, n);
    free(in);
    return 0;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    size_t total = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s does not exist\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (run_file(argv[i])) return 1;
            total++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (!d) return 1;
        char **names = NULL;
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.') continue;
            char **nn = realloc(names, (n + 1) * sizeof *names);
            if (!nn) return 1;
            names = nn;
            if (asprintf(&names[n], "%s/%s", argv[i], de->d_name) < 0) return 1;
            n++;
        }
        closedir(d);
        if (n) qsort(names, n, sizeof *names, cmp);
        for (size_t j = 0; j < n; j++) {
            if (run_file(names[j])) return 1;
            free(names[j]);
        }
        free(names);
        total += n;
    }
    printf("replay: %zu inputs, no crash\n", total);
    return total ? 0 : 1;
}
