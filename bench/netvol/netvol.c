/*
 * The emulated network volume: a FUSE pass-through to a local folder that answers like a
 * network file system. Built and started by bench/netvol/__init__.py (see its docstring).
 *
 *   netvol SOURCE MOUNTPOINT --control SOCKET [--rtt-ms 2] [--stream-mbps 200] [--total-mbps 400]
 *       [--attr-timeout 0] [--entry-timeout 0] [--negative-timeout 0] [--keep-cache | --close-to-open]
 *       [--threads 256]
 *
 * Every call the kernel sends (look-up, getattr, open, readdir, readlink, access, statfs, and
 * the writes) waits one round trip (--rtt-ms) before it is answered; calls from different
 * threads overlap, as a network client's requests do (up to --threads at once). Reads are capped
 * in bandwidth per open file (--stream-mbps) and over all files together (--total-mbps), and a
 * read waits a round trip only when it starts a new 1 MiB block of its file (a network client
 * asks for 1 MiB at a time; the kernel sends 128 KiB pieces).
 *
 * The kernel's caching is explicit: --attr-timeout, --entry-timeout (seconds the kernel keeps a
 * file's attributes and a name's look-up), --negative-timeout (seconds it remembers that a name
 * does not exist), --keep-cache (file data stays in the page cache across opens), --close-to-open
 * (file data stays while the file's mtime and size are unchanged when it is opened again: NFS's
 * close-to-open consistency). All zero and neither is the pessimistic end: every call reaches
 * the volume.
 *
 * Counters (calls per kind, bytes read) are served as JSON on a Unix socket (--control): send
 * "stats" or "reset". It is written in C because the benchmark must measure the worker, not the
 * emulator: a Python FUSE server answered about 8,000 calls a second on two cores, well below
 * what a network client's parallel requests at 2 ms each ask of it.
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define READ_BLOCK (1 << 20)

enum kind { GETATTR, ACCESS, READLINK, OPENDIR, READDIR, STATFS, OPEN, READ, CREATE, WRITE, TRUNCATE,
            MKDIR, RMDIR, UNLINK, RENAME, CHMOD, CHOWN, UTIMENS, SYMLINK, KINDS };
static const char *kind_names[KINDS] = {
    "getattr", "access", "readlink", "opendir", "readdir", "statfs", "open", "read", "create", "write",
    "truncate", "mkdir", "rmdir", "unlink", "rename", "chmod", "chown", "utimens", "symlink"};

/* A bandwidth cap: each read of n bytes passes n / rate after the reads before it on the same cap. */
struct pacer {
    pthread_mutex_t guard;
    double bytes_per_s;
    double free_at;
    long block;
};

/* An open file: its descriptor on the source and its own stream's cap. */
struct stream {
    int fd;
    struct pacer pacer;
};

static struct {
    char source[PATH_MAX];
    const char *control;
    double rtt_s, stream_bps, total_bps;
    double attr_timeout, entry_timeout, negative_timeout;
    int keep_cache, close_to_open, threads;
} config = {.rtt_s = 0.002, .stream_bps = 200e6, .total_bps = 400e6, .threads = 256};

static atomic_ulong calls[KINDS];
static atomic_ulong bytes_read;
static struct pacer total;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_until(double when) {
    struct timespec ts = {.tv_sec = (time_t)when, .tv_nsec = (long)((when - (time_t)when) * 1e9)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* One round trip for one call of `kind`. */
static void round_trip(enum kind kind) {
    atomic_fetch_add(&calls[kind], 1);
    if (config.rtt_s > 0)
        sleep_until(now() + config.rtt_s);
}

static void pacer_init(struct pacer *pacer, double bytes_per_s) {
    pthread_mutex_init(&pacer->guard, NULL);
    pacer->bytes_per_s = bytes_per_s;
    pacer->free_at = 0;
    pacer->block = -1;
}

/* Reserve `size` bytes asked at `asked`; returns when they have passed. */
static double pacer_book(struct pacer *pacer, size_t size, double asked) {
    pthread_mutex_lock(&pacer->guard);
    double start = asked > pacer->free_at ? asked : pacer->free_at;
    pacer->free_at = start + size / pacer->bytes_per_s;
    double done = pacer->free_at;
    pthread_mutex_unlock(&pacer->guard);
    return done;
}

/* Whether a read at `offset` starts a client request of its own (a 1 MiB block not asked yet). */
static int pacer_new_request(struct pacer *pacer, off_t offset) {
    long block = offset / READ_BLOCK;
    pthread_mutex_lock(&pacer->guard);
    int fresh = block != pacer->block;
    pacer->block = block;
    pthread_mutex_unlock(&pacer->guard);
    return fresh;
}

static void source_path(char *out, const char *path) {
    snprintf(out, PATH_MAX, "%s%s", config.source, path);
}

#define SOURCE(name, path) \
    char name[PATH_MAX];   \
    source_path(name, path)
#define ERRNO_OR_ZERO(result) ((result) == -1 ? -errno : 0)

static struct stream *stream_of(struct fuse_file_info *fi) {
    return fi ? (struct stream *)(uintptr_t)fi->fh : NULL;
}

/* -- the calls ---------------------------------------------------------------------------- */

static void *nv_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
    conn->max_readahead = READ_BLOCK; /* reads of up to 1 MiB, as a network client's */
    cfg->attr_timeout = config.attr_timeout;
    cfg->entry_timeout = config.entry_timeout;
    cfg->negative_timeout = config.negative_timeout;
    cfg->kernel_cache = config.keep_cache;
    cfg->auto_cache = config.close_to_open;
    cfg->use_ino = 1;
    return NULL;
}

static int nv_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    round_trip(GETATTR);
    struct stream *stream = stream_of(fi);
    if (stream)
        return ERRNO_OR_ZERO(fstat(stream->fd, st));
    SOURCE(real, path);
    return ERRNO_OR_ZERO(lstat(real, st));
}

static int nv_access(const char *path, int mask) {
    round_trip(ACCESS);
    SOURCE(real, path);
    return ERRNO_OR_ZERO(access(real, mask));
}

static int nv_readlink(const char *path, char *buf, size_t size) {
    round_trip(READLINK);
    SOURCE(real, path);
    ssize_t n = readlink(real, buf, size - 1);
    if (n == -1)
        return -errno;
    buf[n] = '\0';
    return 0;
}

static int nv_opendir(const char *path, struct fuse_file_info *fi) {
    round_trip(OPENDIR);
    SOURCE(real, path);
    struct stat st;
    if (lstat(real, &st) == -1)
        return -errno;
    fi->fh = 0;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* Every entry in one answer, with its type and inode. */
static int nv_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t offset, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
    (void)offset, (void)fi, (void)flags;
    round_trip(READDIR);
    SOURCE(real, path);
    DIR *dir = opendir(real);
    if (!dir)
        return -errno;
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        struct stat st = {.st_ino = entry->d_ino, .st_mode = (mode_t)DTTOIF(entry->d_type)};
        if (fill(buf, entry->d_name, &st, 0, 0))
            break;
    }
    closedir(dir);
    return 0;
}

static int nv_statfs(const char *path, struct statvfs *st) {
    round_trip(STATFS);
    SOURCE(real, path);
    return ERRNO_OR_ZERO(statvfs(real, st));
}

static int keep_stream(int fd, struct fuse_file_info *fi) {
    if (fd == -1)
        return -errno;
    struct stream *stream = malloc(sizeof *stream);
    stream->fd = fd;
    pacer_init(&stream->pacer, config.stream_bps);
    fi->fh = (uintptr_t)stream;
    return 0;
}

static int nv_open(const char *path, struct fuse_file_info *fi) {
    round_trip(OPEN);
    SOURCE(real, path);
    /* O_DIRECT is the client's: it skips the client's page cache, not the volume's own (nor its
       alignment rules: libfuse's buffers are not aligned for it). */
    return keep_stream(open(real, fi->flags & ~(O_CREAT | O_DIRECT)), fi);
}

/* A round trip per 1 MiB request, overlapped with the transfer; reads in flight share the caps. */
static int nv_read(const char *path, char *buf, size_t size, off_t offset, struct fuse_file_info *fi) {
    (void)path;
    double started = now();
    struct stream *stream = stream_of(fi);
    atomic_fetch_add(&calls[READ], 1);
    ssize_t n = pread(stream->fd, buf, size, offset);
    if (n == -1)
        return -errno;
    atomic_fetch_add(&bytes_read, (unsigned long)n);
    double sent = pacer_book(&total, n, started);
    double own = pacer_book(&stream->pacer, n, started);
    sent = own > sent ? own : sent;
    if (pacer_new_request(&stream->pacer, offset) && started + config.rtt_s > sent)
        sent = started + config.rtt_s;
    sleep_until(sent);
    return (int)n;
}

static int nv_release(const char *path, struct fuse_file_info *fi) {
    (void)path;
    struct stream *stream = stream_of(fi);
    close(stream->fd);
    pthread_mutex_destroy(&stream->pacer.guard);
    free(stream);
    return 0;
}

/* -- writes pass through, a round trip each (the worker writes only its own files) -------- */

static int nv_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
    round_trip(CREATE);
    SOURCE(real, path);
    return keep_stream(open(real, fi->flags | O_CREAT, mode), fi);
}

static int nv_write(const char *path, const char *buf, size_t size, off_t offset, struct fuse_file_info *fi) {
    (void)path;
    round_trip(WRITE);
    ssize_t n = pwrite(stream_of(fi)->fd, buf, size, offset);
    return n == -1 ? -errno : (int)n;
}

static int nv_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
    round_trip(TRUNCATE);
    struct stream *stream = stream_of(fi);
    if (stream)
        return ERRNO_OR_ZERO(ftruncate(stream->fd, size));
    SOURCE(real, path);
    return ERRNO_OR_ZERO(truncate(real, size));
}

static int nv_mkdir(const char *path, mode_t mode) {
    round_trip(MKDIR);
    SOURCE(real, path);
    return ERRNO_OR_ZERO(mkdir(real, mode));
}

static int nv_rmdir(const char *path) {
    round_trip(RMDIR);
    SOURCE(real, path);
    return ERRNO_OR_ZERO(rmdir(real));
}

static int nv_unlink(const char *path) {
    round_trip(UNLINK);
    SOURCE(real, path);
    return ERRNO_OR_ZERO(unlink(real));
}

static int nv_rename(const char *from, const char *to, unsigned int flags) {
    round_trip(RENAME);
    SOURCE(real_from, from);
    SOURCE(real_to, to);
    return ERRNO_OR_ZERO(renameat2(AT_FDCWD, real_from, AT_FDCWD, real_to, flags));
}

static int nv_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) {
    (void)fi;
    round_trip(CHMOD);
    SOURCE(real, path);
    return ERRNO_OR_ZERO(chmod(real, mode));
}

static int nv_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
    (void)fi;
    round_trip(CHOWN);
    SOURCE(real, path);
    return ERRNO_OR_ZERO(lchown(real, uid, gid));
}

static int nv_utimens(const char *path, const struct timespec times[2], struct fuse_file_info *fi) {
    (void)fi;
    round_trip(UTIMENS);
    SOURCE(real, path);
    return ERRNO_OR_ZERO(utimensat(AT_FDCWD, real, times, AT_SYMLINK_NOFOLLOW));
}

static int nv_symlink(const char *target, const char *path) {
    round_trip(SYMLINK);
    SOURCE(real, path);
    return ERRNO_OR_ZERO(symlink(target, real));
}

static const struct fuse_operations operations = {
    .init = nv_init,         .getattr = nv_getattr, .access = nv_access,     .readlink = nv_readlink,
    .opendir = nv_opendir,   .readdir = nv_readdir, .statfs = nv_statfs,     .open = nv_open,
    .read = nv_read,         .release = nv_release, .create = nv_create,     .write = nv_write,
    .truncate = nv_truncate, .mkdir = nv_mkdir,     .rmdir = nv_rmdir,       .unlink = nv_unlink,
    .rename = nv_rename,     .chmod = nv_chmod,     .chown = nv_chown,       .utimens = nv_utimens,
    .symlink = nv_symlink,
};

/* -- the counters, on a Unix socket ------------------------------------------------------- */

static void answer(int client) {
    char command[64] = {0};
    ssize_t got = recv(client, command, sizeof command - 1, 0);
    int reset = got > 0 && strncmp(command, "reset", 5) == 0;
    char json[2048];
    int at = snprintf(json, sizeof json, "{\"calls\": {");
    unsigned long sum = 0;
    const char *comma = "";
    for (int kind = 0; kind < KINDS; kind++) {
        unsigned long count = reset ? (atomic_store(&calls[kind], 0), 0) : atomic_load(&calls[kind]);
        if (count) {
            at += snprintf(json + at, sizeof json - at, "%s\"%s\": %lu", comma, kind_names[kind], count);
            comma = ", ";
        }
        sum += count;
    }
    unsigned long bytes = reset ? (atomic_store(&bytes_read, 0), 0) : atomic_load(&bytes_read);
    at += snprintf(json + at, sizeof json - at, "}, \"total_calls\": %lu, \"bytes_read\": %lu}", sum, bytes);
    send(client, json, at, MSG_NOSIGNAL);
}

static void *serve_control(void *unused) {
    (void)unused;
    int server = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    snprintf(address.sun_path, sizeof address.sun_path, "%s", config.control);
    if (bind(server, (struct sockaddr *)&address, sizeof address) == -1 || listen(server, 4) == -1) {
        perror("netvol: control socket");
        exit(1);
    }
    for (;;) {
        int client = accept(server, NULL, NULL);
        if (client == -1)
            continue;
        answer(client);
        close(client);
    }
    return NULL;
}

/* -- options -------------------------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr, "usage: netvol SOURCE MOUNTPOINT --control SOCKET [--rtt-ms MS] [--stream-mbps MB/S] "
                    "[--total-mbps MB/S] [--attr-timeout S] [--entry-timeout S] [--negative-timeout S] "
                    "[--keep-cache | --close-to-open] [--threads N]\n");
    exit(2);
}

static double number(const char *option, const char *text) {
    char *end;
    double value = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || value < 0) {
        fprintf(stderr, "netvol: %s wants a number >= 0, got '%s'\n", option, text);
        exit(2);
    }
    return value;
}

/* Parses "--name=value" and "--name value"; returns the mount point. */
static const char *parse(int argc, char **argv) {
    const char *positional[2] = {NULL, NULL};
    int count = 0;
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i], *value = strchr(arg, '=');
        if (strncmp(arg, "--", 2) != 0) {
            if (count == 2)
                usage();
            positional[count++] = arg;
            continue;
        }
        if (value)
            *value++ = '\0';
        if (!strcmp(arg, "--keep-cache")) {
            config.keep_cache = 1;
            continue;
        }
        if (!strcmp(arg, "--close-to-open")) {
            config.close_to_open = 1;
            continue;
        }
        if (!value && (value = argv[++i]) == NULL)
            usage();
        if (!strcmp(arg, "--control"))
            config.control = value;
        else if (!strcmp(arg, "--rtt-ms"))
            config.rtt_s = number(arg, value) / 1000;
        else if (!strcmp(arg, "--stream-mbps"))
            config.stream_bps = number(arg, value) * 1e6;
        else if (!strcmp(arg, "--total-mbps"))
            config.total_bps = number(arg, value) * 1e6;
        else if (!strcmp(arg, "--attr-timeout"))
            config.attr_timeout = number(arg, value);
        else if (!strcmp(arg, "--entry-timeout"))
            config.entry_timeout = number(arg, value);
        else if (!strcmp(arg, "--negative-timeout"))
            config.negative_timeout = number(arg, value);
        else if (!strcmp(arg, "--threads"))
            config.threads = (int)number(arg, value);
        else
            usage();
    }
    if (count != 2 || !config.control || config.stream_bps <= 0 || config.total_bps <= 0 || config.threads < 1)
        usage();
    if (!realpath(positional[0], config.source)) {
        perror(positional[0]);
        exit(2);
    }
    return positional[1];
}

int main(int argc, char **argv) {
    const char *mountpoint = parse(argc, argv);
    pacer_init(&total, config.total_bps);
    pthread_t control;
    pthread_create(&control, NULL, serve_control, NULL);
    /* allow_other: ComfyUI's own user reads the volume too; default_permissions: the kernel checks modes. */
    /* Threads kept idle as well: a volume's answers must not wait for threads to be made. */
    char options[160];
    snprintf(options, sizeof options,
             "allow_other,default_permissions,fsname=netvol,subtype=netvol,max_threads=%d,max_idle_threads=%d",
             config.threads, config.threads);
    char *fuse_argv[] = {argv[0], (char *)mountpoint, "-f", "-o", options, NULL};
    return fuse_main(5, fuse_argv, &operations, NULL);
}
