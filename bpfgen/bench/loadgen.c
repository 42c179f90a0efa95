// The connection benchmarks' load generator and backend (bpfgen/bench/connections.py, scale.py).
// Compiled at bench time: clang -O2 -pthread loadgen.c -o loadgen
//
//   loadgen serve PORT THREADS
//       TCP: answers every line with "PEER_ADDR PEER_PORT\n" (the source the backend saw),
//       closes after the client does; UDP on the same port: answers every datagram alike.
//       THREADS threads block in accept() on one listener. Prints "ready".
//   loadgen tcp-short ADDR PORT THREADS SECONDS MAX EXPECT
//       connect, one request line, its answer, close (the client closes first), again.
//   loadgen tcp-keepalive ADDR PORT THREADS SECONDS MAX EXPECT
//       one connection per thread, requests one after the other on it.
//   loadgen udp-new ADDR PORT THREADS SECONDS MAX EXPECT
//       a new socket for every request datagram, bound to the next source port of
//       1024..65023 in turn (so every request is a new flow while MAX <= 64000).
//
// Every client loop stops after SECONDS or MAX requests in all (whichever first), and
// each thread after 50 failures. EXPECT is the peer address the backend must report
// ("-": any). Prints one JSON object: ok, failed, mismatched, elapsed_s, latency
// percentiles in microseconds (connect to answer for tcp-short, request to answer
// otherwise), and the first error.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FAILURES_PER_THREAD 50
#define IO_TIMEOUT_S 2

static struct sockaddr_in target;
static double seconds;
static long max_total;
static const char *expect;
static atomic_long issued;
static atomic_long next_port;
static uint64_t deadline_ns;
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_error[160];

struct worker {
	pthread_t tid;
	uint64_t *lat;
	long n, cap, failed, mismatched;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void note_error(const char *what, const char *detail)
{
	pthread_mutex_lock(&err_lock);
	if (!first_error[0])
		snprintf(first_error, sizeof(first_error), "%s: %s", what, detail);
	pthread_mutex_unlock(&err_lock);
}

static void set_timeouts(int fd, int secs)
{
	struct timeval tv = {.tv_sec = secs};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// One more request allowed? Bounded by count and by time.
static int may_issue(void)
{
	if (now_ns() >= deadline_ns)
		return 0;
	return atomic_fetch_add(&issued, 1) < max_total;
}

// Reads one answer line; 0 when it came and (if EXPECT) named the expected peer, 1 on a
// mismatch, -1 on an error.
static int read_answer(int fd)
{
	char buf[128];
	size_t got = 0;
	while (got < sizeof(buf) - 1) {
		ssize_t r = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (r <= 0) {
			note_error("read", r == 0 ? "connection closed" : strerror(errno));
			return -1;
		}
		got += (size_t)r;
		if (memchr(buf, '\n', got))
			break;
	}
	buf[got] = 0;
	if (strcmp(expect, "-") == 0)
		return 0;
	size_t len = strlen(expect);
	if (strncmp(buf, expect, len) == 0 && buf[len] == ' ')
		return 0;
	buf[strcspn(buf, "\n")] = 0;
	note_error("unexpected peer", buf);
	return 1;
}

static void record(struct worker *w, uint64_t t0, int rc)
{
	if (rc < 0) {
		w->failed++;
		return;
	}
	if (rc > 0)
		w->mismatched++;
	if (w->n < w->cap)
		w->lat[w->n] = now_ns() - t0;
	w->n++;
}

static int connect_target(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		note_error("socket", strerror(errno));
		return -1;
	}
	set_timeouts(fd, IO_TIMEOUT_S);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&target, sizeof(target)) < 0) {
		note_error("connect", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void *tcp_short(void *arg)
{
	struct worker *w = arg;
	while (w->failed < MAX_FAILURES_PER_THREAD && may_issue()) {
		uint64_t t0 = now_ns();
		int fd = connect_target();
		int rc = -1;
		if (fd >= 0) {
			if (write(fd, "q\n", 2) == 2)
				rc = read_answer(fd);
			else
				note_error("write", strerror(errno));
			close(fd);
		}
		record(w, t0, rc);
	}
	return NULL;
}

static void *tcp_keepalive(void *arg)
{
	struct worker *w = arg;
	int fd = -1;
	while (w->failed < MAX_FAILURES_PER_THREAD && may_issue()) {
		if (fd < 0 && (fd = connect_target()) < 0) {
			w->failed++;
			continue;
		}
		uint64_t t0 = now_ns();
		int rc = -1;
		if (write(fd, "q\n", 2) == 2)
			rc = read_answer(fd);
		else
			note_error("write", strerror(errno));
		record(w, t0, rc);
		if (rc < 0) {
			close(fd);
			fd = -1;
		}
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void *udp_new(void *arg)
{
	struct worker *w = arg;
	while (w->failed < MAX_FAILURES_PER_THREAD && may_issue()) {
		int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			note_error("socket", strerror(errno));
			w->failed++;
			continue;
		}
		set_timeouts(fd, 1);
		struct sockaddr_in src = {.sin_family = AF_INET};
		src.sin_port = htons((uint16_t)(1024 + atomic_fetch_add(&next_port, 1) % 64000));
		int rc = -1;
		uint64_t t0 = now_ns();
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) == 0 &&
		    connect(fd, (struct sockaddr *)&target, sizeof(target)) == 0 &&
		    send(fd, "q\n", 2, 0) == 2)
			rc = read_answer(fd);
		else
			note_error("udp send", strerror(errno));
		record(w, t0, rc);
		close(fd);
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *v, long n, double p)
{
	if (n == 0)
		return 0;
	long i = (long)(p / 100.0 * (double)(n - 1) + 0.5);
	return (double)v[i] / 1000.0;
}

static int client(void *(*fn)(void *), int argc, char **argv)
{
	if (argc != 8) {
		fprintf(stderr, "usage: loadgen %s ADDR PORT THREADS SECONDS MAX EXPECT\n", argv[1]);
		return 2;
	}
	target.sin_family = AF_INET;
	target.sin_port = htons((uint16_t)atoi(argv[3]));
	if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1) {
		fprintf(stderr, "loadgen: bad address %s\n", argv[2]);
		return 2;
	}
	int threads = atoi(argv[4]);
	seconds = atof(argv[5]);
	max_total = atol(argv[6]);
	expect = argv[7];
	if (threads < 1 || threads > 256 || seconds <= 0 || seconds > 600 || max_total < 1) {
		fprintf(stderr, "loadgen: THREADS 1..256, SECONDS 0..600, MAX >= 1\n");
		return 2;
	}
	struct worker *ws = calloc((size_t)threads, sizeof(*ws));
	long cap = max_total / threads + 1;
	if (cap > 2000000)
		cap = 2000000;
	uint64_t start = now_ns();
	deadline_ns = start + (uint64_t)(seconds * 1e9);
	for (int i = 0; i < threads; i++) {
		ws[i].cap = cap;
		ws[i].lat = calloc((size_t)cap, sizeof(uint64_t));
		if (!ws[i].lat || pthread_create(&ws[i].tid, NULL, fn, &ws[i]) != 0) {
			fprintf(stderr, "loadgen: out of memory or threads\n");
			return 1;
		}
	}
	long ok = 0, failed = 0, mismatched = 0, kept = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(ws[i].tid, NULL);
		ok += ws[i].n;
		failed += ws[i].failed;
		mismatched += ws[i].mismatched;
		kept += ws[i].n < ws[i].cap ? ws[i].n : ws[i].cap;
	}
	double elapsed = (double)(now_ns() - start) / 1e9;
	uint64_t *all = malloc((size_t)(kept ? kept : 1) * sizeof(uint64_t));
	long k = 0;
	for (int i = 0; i < threads; i++) {
		long n = ws[i].n < ws[i].cap ? ws[i].n : ws[i].cap;
		memcpy(all + k, ws[i].lat, (size_t)n * sizeof(uint64_t));
		k += n;
	}
	qsort(all, (size_t)kept, sizeof(uint64_t), cmp_u64);
	double sum = 0;
	for (long i = 0; i < kept; i++)
		sum += (double)all[i];
	for (char *c = first_error; *c; c++)
		if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
			*c = ' ';
	printf("{\"ok\": %ld, \"failed\": %ld, \"mismatched\": %ld, \"elapsed_s\": %.6f, "
	       "\"threads\": %d, \"p50_us\": %.3f, \"p90_us\": %.3f, \"p99_us\": %.3f, "
	       "\"mean_us\": %.3f, \"max_us\": %.3f, \"first_error\": \"%s\"}\n",
	       ok, failed, mismatched, elapsed, threads, pct_us(all, kept, 50),
	       pct_us(all, kept, 90), pct_us(all, kept, 99),
	       kept ? sum / (double)kept / 1000.0 : 0.0, kept ? (double)all[kept - 1] / 1000.0 : 0.0,
	       first_error);
	return 0;
}

// --- the backend

static int listen_fd, udp_fd;

static size_t peer_line(const struct sockaddr_in *peer, char *out, size_t size)
{
	char addr[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &peer->sin_addr, addr, sizeof(addr));
	return (size_t)snprintf(out, size, "%s %u\n", addr, ntohs(peer->sin_port));
}

static void *serve_tcp(void *arg)
{
	(void)arg;
	for (;;) {
		struct sockaddr_in peer;
		socklen_t plen = sizeof(peer);
		int fd = accept4(listen_fd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		set_timeouts(fd, 30);
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		char line[64], buf[512];
		size_t len = peer_line(&peer, line, sizeof(line));
		ssize_t r;
		while ((r = read(fd, buf, sizeof(buf))) > 0) {
			for (ssize_t i = 0; i < r; i++)
				if (buf[i] == '\n' && write(fd, line, len) != (ssize_t)len)
					break;
		}
		close(fd);
	}
	return NULL;
}

static void *serve_udp(void *arg)
{
	(void)arg;
	for (;;) {
		struct sockaddr_in peer;
		socklen_t plen = sizeof(peer);
		char buf[512], line[64];
		if (recvfrom(udp_fd, buf, sizeof(buf), 0, (struct sockaddr *)&peer, &plen) < 0)
			continue;
		size_t len = peer_line(&peer, line, sizeof(line));
		sendto(udp_fd, line, len, 0, (struct sockaddr *)&peer, plen);
	}
	return NULL;
}

static int serve(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: loadgen serve PORT THREADS\n");
		return 2;
	}
	int threads = atoi(argv[3]);
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
	int one = 1;
	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    listen(listen_fd, 4096) < 0 || bind(udp_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror("loadgen serve");
		return 1;
	}
	pthread_t tid;
	for (int i = 0; i < threads; i++)
		pthread_create(&tid, NULL, serve_tcp, NULL);
	pthread_create(&tid, NULL, serve_udp, NULL);
	printf("ready\n");
	fflush(stdout);
	pause();
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "serve") == 0)
		return serve(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "tcp-short") == 0)
		return client(tcp_short, argc, argv);
	if (argc >= 2 && strcmp(argv[1], "tcp-keepalive") == 0)
		return client(tcp_keepalive, argc, argv);
	if (argc >= 2 && strcmp(argv[1], "udp-new") == 0)
		return client(udp_new, argc, argv);
	fprintf(stderr, "usage: loadgen serve|tcp-short|tcp-keepalive|udp-new ...\n");
	return 2;
}
