/*
 * cps: new TCP connections per second against HOST:PORT.
 *
 * Each of THREADS threads loops: socket, blocking connect, send a small request, read the
 * reply until the server closes, close. Bounded by SECONDS and by MAX connections in total.
 * Prints "conn_per_s=<N>" (successful connections / elapsed seconds) and "errors=<N>" on
 * stdout; exit status 1 when no connection succeeded.
 *
 *   cps [-t THREADS] [-d SECONDS] [-n MAX] HOST PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in target;
static double deadline;
static long max_total = 10000000;
static atomic_long started, succeeded, failed;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int one_connection(void) {
    static const char request[] = "PING 0123456789\n";
    char reply[256];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval tv = { .tv_sec = 2 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int ok = -1;
    if (connect(fd, (struct sockaddr *)&target, sizeof target) == 0 &&
        write(fd, request, sizeof request - 1) == (ssize_t)(sizeof request - 1)) {
        ssize_t got = 0, n;
        while ((n = read(fd, reply, sizeof reply)) > 0) got += n;
        if (n == 0 && got > 0) ok = 0; /* a reply, then the server's FIN */
    }
    close(fd);
    return ok;
}

static void *worker(void *arg) {
    (void)arg;
    while (now() < deadline) {
        if (atomic_fetch_add(&started, 1) >= max_total) break;
        if (one_connection() == 0) atomic_fetch_add(&succeeded, 1);
        else atomic_fetch_add(&failed, 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = 2, opt;
    double seconds = 5;
    while ((opt = getopt(argc, argv, "t:d:n:")) != -1) {
        switch (opt) {
        case 't': threads = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'n': max_total = atol(optarg); break;
        default: goto usage;
        }
    }
    if (argc - optind != 2 || threads < 1 || threads > 256 || seconds <= 0 || seconds > 600) goto usage;
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)atoi(argv[optind + 1]));
    if (inet_pton(AF_INET, argv[optind], &target.sin_addr) != 1) {
        fprintf(stderr, "cps: not an IPv4 address: %s\n", argv[optind]);
        return 2;
    }
    pthread_t ids[256];
    double start = now();
    deadline = start + seconds;
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&ids[i], NULL, worker, NULL) != 0) { perror("cps: pthread_create"); return 1; }
    }
    for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
    double elapsed = now() - start;
    long ok = atomic_load(&succeeded), bad = atomic_load(&failed);
    printf("conn_per_s=%.1f\nconnections=%ld\nerrors=%ld\nseconds=%.3f\n", ok / elapsed, ok, bad, elapsed);
    if (bad > 0) fprintf(stderr, "cps: %ld connection(s) failed (%s)\n", bad, strerror(errno));
    return ok > 0 ? 0 : 1;
usage:
    fprintf(stderr, "usage: cps [-t THREADS(1-256)] [-d SECONDS(<=600)] [-n MAX] IPV4 PORT\n");
    return 2;
}
