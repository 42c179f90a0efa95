// The connection benchmarks' load generator and backend (bench/connections.py, scale.py).
// Compiled at bench time: clang -O2 -pthread loadgen.c -o loadgen
//
//   loadgen serve PORT THREADS
//       TCP: answers every line with "PEER_ADDR PEER_PORT LOCAL_ADDR\n" (the source the
//       backend saw, and the address it was reached at: which backend answered, when one
//       namespace holds several), closes after the client does; UDP on the same port:
//       answers every datagram with "PEER_ADDR PEER_PORT\n". THREADS threads block in
//       accept() on one listener bound to 0.0.0.0. Prints "ready".
//   loadgen tcp-short ADDR PORT THREADS SECONDS MAX EXPECT
//       connect, one request line, its answer, close (the client closes first), again.
//   loadgen tcp-keepalive ADDR PORT THREADS SECONDS MAX EXPECT
//       one connection per thread, requests one after the other on it.
//   loadgen udp-new ADDR PORT THREADS SECONDS MAX EXPECT
//       a new socket for every request datagram, bound to the next source port of
//       1024..65023 in turn (so every request is a new flow while MAX <= 64000).
//
// Every client loop stops after SECONDS or MAX requests in all (whichever first), and
// each thread after 50 failures; a connect or read waits at most IO_TIMEOUT_S. EXPECT is
// the peer address the backend must report ("-": any). Prints one JSON object:
//   ok, failed, mismatched, elapsed_s;
//   p50/p90/p99/p999/mean/max_us: latency of the completed requests in microseconds
//     (socket to answer for tcp-short, request to answer otherwise), and the same
//     percentiles apart for its two parts: connect_us (socket() to connect() returned;
//     tcp-short only) and rr_us (request written to answer read);
//   hist: completed requests per latency bucket (count[i]: latency < le_us[i], the
//     last bucket unbounded);
//   over_200ms: requests (completed or failed) that took >= 200 ms, by cause, in this
//     order: rst (failed with ECONNRESET/ECONNREFUSED), syn_retransmit (connect() took
//     >= 200 ms and the SYN was sent again, or connect() timed out: on a LAN a lost or
//     unanswered SYN), data_stall (request/answer took >= 200 ms and the client sent a
//     segment again), other (slow without a retransmission by the client: a thread or
//     the packet path not scheduled, or a segment the backend had to send again: its
//     nstat counters tell); the client's TCP_INFO tcpi_total_retrans is read only for a
//     slow part, so fast requests pay nothing for it;
//   failed_by_cause: timeout (connect or read timed out), rst, other;
//   per_s_ok, per_s_failed: requests completed / failed in each second of the run;
//   backends_seen: distinct LOCAL_ADDRs the answers named (up to 256);
//   first_error.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FAILURES_PER_THREAD 50
#define IO_TIMEOUT_S 2
#define MAX_SECONDS 600
#define STALL_NS 200000000ull /* a request this slow is a stall, counted by cause */
#define MAX_BACKENDS 256

enum stall_cause { STALL_RST, STALL_SYN_RETRANSMIT, STALL_DATA, STALL_OTHER, STALL_CAUSES };
static const char *const stall_names[STALL_CAUSES] = {"rst", "syn_retransmit", "data_stall",
						       "other"};
enum fail_cause { FAIL_TIMEOUT, FAIL_RST, FAIL_OTHER, FAIL_CAUSES };
static const char *const fail_names[FAIL_CAUSES] = {"timeout", "rst", "other"};
// Upper bounds (µs) of the latency histogram's buckets; one more bucket holds the rest.
static const uint64_t hist_le_us[] = {50,    100,    200,    500,    1000,    2000,   5000,
				      10000, 20000,  50000,  100000, 200000, 500000, 1000000,
				      2000000};
#define HIST_BUCKETS (sizeof(hist_le_us) / sizeof(hist_le_us[0]) + 1)

static struct sockaddr_in target;
static double seconds;
static long max_total;
static const char *expect;
static atomic_long issued;
static atomic_long next_port;
static uint64_t start_ns, deadline_ns;
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_error[160];

// One request's times (ns): connect is 0 where the request opened no connection;
// syn_rtx / data_rtx: a slow part saw its segment sent again (TCP_INFO).
struct sample {
	uint64_t connect, rr, total;
	uint8_t syn_rtx, data_rtx;
};

struct worker {
	pthread_t tid;
	struct sample *lat;
	long n, cap, failed, mismatched;
	long stalls[STALL_CAUSES], fails[FAIL_CAUSES];
	long per_s_ok[MAX_SECONDS + 1], per_s_failed[MAX_SECONDS + 1];
	uint32_t backends[MAX_BACKENDS];
	int nbackends;
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

// The answer's third field (the backend's own address), once per distinct address.
static void note_backend(struct worker *w, const char *line)
{
	const char *sp = strchr(line, ' ');
	if (sp)
		sp = strchr(sp + 1, ' ');
	struct in_addr a;
	char addr[INET_ADDRSTRLEN];
	if (!sp || sscanf(sp + 1, "%15s", addr) != 1 || inet_pton(AF_INET, addr, &a) != 1)
		return;
	for (int i = 0; i < w->nbackends; i++)
		if (w->backends[i] == a.s_addr)
			return;
	if (w->nbackends < MAX_BACKENDS)
		w->backends[w->nbackends++] = a.s_addr;
}

// Reads one answer line; 0 when it came and (if EXPECT) named the expected peer, 1 on a
// mismatch, -1 on an error (its errno in *err).
static int read_answer(struct worker *w, int fd, int *err)
{
	char buf[128];
	size_t got = 0;
	while (got < sizeof(buf) - 1) {
		ssize_t r = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (r <= 0) {
			*err = r == 0 ? ECONNRESET : errno;
			note_error("read", r == 0 ? "connection closed" : strerror(errno));
			return -1;
		}
		got += (size_t)r;
		if (memchr(buf, '\n', got))
			break;
	}
	buf[got] = 0;
	buf[strcspn(buf, "\n")] = 0;
	note_backend(w, buf);
	if (strcmp(expect, "-") == 0)
		return 0;
	size_t len = strlen(expect);
	if (strncmp(buf, expect, len) == 0 && buf[len] == ' ')
		return 0;
	note_error("unexpected peer", buf);
	return 1;
}

static enum fail_cause fail_cause(int err)
{
	if (err == ECONNRESET || err == ECONNREFUSED)
		return FAIL_RST;
	if (err == EAGAIN || err == EWOULDBLOCK || err == EINPROGRESS || err == ETIMEDOUT)
		return FAIL_TIMEOUT;
	return FAIL_OTHER;
}

// One request done (rc: 0 ok, 1 wrong peer, -1 failed with errno err): counted in its
// second, its times kept, and if it took >= STALL_NS its cause counted.
static void record(struct worker *w, struct sample s, int rc, int err)
{
	long sec = (long)((now_ns() - start_ns) / 1000000000ull);
	if (sec > MAX_SECONDS)
		sec = MAX_SECONDS;
	if (rc < 0) {
		w->failed++;
		w->per_s_failed[sec]++;
		w->fails[fail_cause(err)]++;
	} else {
		if (rc > 0)
			w->mismatched++;
		w->per_s_ok[sec]++;
		if (w->n < w->cap)
			w->lat[w->n] = s;
		w->n++;
	}
	if (s.total < STALL_NS)
		return;
	if (rc < 0 && fail_cause(err) == FAIL_RST)
		w->stalls[STALL_RST]++;
	else if (s.connect >= STALL_NS && s.syn_rtx)
		w->stalls[STALL_SYN_RETRANSMIT]++;
	else if (s.rr >= STALL_NS && s.data_rtx)
		w->stalls[STALL_DATA]++;
	else
		w->stalls[STALL_OTHER]++;
}

// Segments (SYNs included) the socket has sent again so far; read only for a slow part.
static unsigned total_retrans(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
		return 0;
	return ti.tcpi_total_retrans;
}

static int connect_target(int *err)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = errno;
		note_error("socket", strerror(errno));
		return -1;
	}
	set_timeouts(fd, IO_TIMEOUT_S);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&target, sizeof(target)) < 0) {
		*err = errno;
		note_error("connect", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

// Request line out, answer in: rc as read_answer.
static int request(struct worker *w, int fd, int *err)
{
	if (write(fd, "q\n", 2) == 2)
		return read_answer(w, fd, err);
	*err = errno;
	note_error("write", strerror(errno));
	return -1;
}

static void *tcp_short(void *arg)
{
	struct worker *w = arg;
	while (w->failed < MAX_FAILURES_PER_THREAD && may_issue()) {
		int err = 0, rc = -1;
		uint64_t t0 = now_ns();
		int fd = connect_target(&err);
		uint64_t t1 = now_ns();
		struct sample s = {.connect = t1 - t0};
		unsigned syn_rtx = 0;
		// A connect() that timed out waited past the SYN's first retransmission (1 s).
		s.syn_rtx = fd < 0 && fail_cause(err) == FAIL_TIMEOUT;
		if (fd >= 0 && s.connect >= STALL_NS)
			s.syn_rtx = (syn_rtx = total_retrans(fd)) > 0;
		if (fd >= 0)
			rc = request(w, fd, &err);
		uint64_t t2 = now_ns();
		s.rr = t2 - t1;
		s.total = t2 - t0;
		if (fd >= 0 && s.rr >= STALL_NS)
			s.data_rtx = total_retrans(fd) > syn_rtx;
		if (fd >= 0)
			close(fd);
		record(w, s, rc, err);
	}
	return NULL;
}

static void *tcp_keepalive(void *arg)
{
	struct worker *w = arg;
	int fd = -1;
	unsigned rtx_seen = 0;
	while (w->failed < MAX_FAILURES_PER_THREAD && may_issue()) {
		int err = 0;
		uint64_t t0 = now_ns();
		if (fd < 0) {
			if ((fd = connect_target(&err)) < 0) {
				uint64_t t = now_ns() - t0;
				record(w, (struct sample){.connect = t, .total = t,
							  .syn_rtx = fail_cause(err) == FAIL_TIMEOUT},
				       -1, err);
				continue;
			}
			// A slow connect: the SYNs it sent again are not the requests' doing.
			rtx_seen = now_ns() - t0 >= STALL_NS ? total_retrans(fd) : 0;
		}
		t0 = now_ns();
		int rc = request(w, fd, &err);
		uint64_t t = now_ns() - t0;
		struct sample s = {.rr = t, .total = t};
		if (t >= STALL_NS) { // retransmitted since this connection's last slow request?
			unsigned now = total_retrans(fd);
			s.data_rtx = now > rtx_seen;
			rtx_seen = now;
		}
		record(w, s, rc, err);
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
		int err = 0;
		int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			note_error("socket", strerror(errno));
			record(w, (struct sample){0}, -1, errno);
			continue;
		}
		set_timeouts(fd, 1);
		struct sockaddr_in src = {.sin_family = AF_INET};
		src.sin_port = htons((uint16_t)(1024 + atomic_fetch_add(&next_port, 1) % 64000));
		int rc = -1;
		uint64_t t0 = now_ns();
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) == 0 &&
		    connect(fd, (struct sockaddr *)&target, sizeof(target)) == 0 &&
		    send(fd, "q\n", 2, 0) == 2) {
			rc = read_answer(w, fd, &err);
		} else {
			err = errno;
			note_error("udp send", strerror(errno));
		}
		uint64_t t = now_ns() - t0;
		record(w, (struct sample){.rr = t, .total = t}, rc, err);
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

// `"name": {"p50": .., "p90": .., "p99": .., "p999": .., "max": ..}` of sorted v (µs).
static void print_percentiles(const char *name, const uint64_t *v, long n)
{
	printf("\"%s\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, "
	       "\"max\": %.3f}, ",
	       name, pct_us(v, n, 50), pct_us(v, n, 90), pct_us(v, n, 99), pct_us(v, n, 99.9),
	       n ? (double)v[n - 1] / 1000.0 : 0.0);
}

// `"name": [a, b, ...], ` of n longs.
static void print_longs(const char *name, const long *v, long n)
{
	printf("\"%s\": [", name);
	for (long i = 0; i < n; i++)
		printf(i ? ", %ld" : "%ld", v[i]);
	printf("], ");
}

// One field (offset into struct sample) of the kept samples, sorted.
static uint64_t *sorted_field(const struct sample *s, long n, size_t offset)
{
	uint64_t *v = malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
	for (long i = 0; i < n; i++)
		memcpy(&v[i], (const char *)&s[i] + offset, sizeof(uint64_t));
	qsort(v, (size_t)n, sizeof(uint64_t), cmp_u64);
	return v;
}

static void report(struct worker *ws, int threads, int keep_connect)
{
	long ok = 0, failed = 0, mismatched = 0, kept = 0;
	long stalls[STALL_CAUSES] = {0}, fails[FAIL_CAUSES] = {0};
	static long per_s_ok[MAX_SECONDS + 1], per_s_failed[MAX_SECONDS + 1];
	uint32_t backends[MAX_BACKENDS];
	int nbackends = 0;
	for (int i = 0; i < threads; i++) {
		struct worker *w = &ws[i];
		ok += w->n;
		failed += w->failed;
		mismatched += w->mismatched;
		kept += w->n < w->cap ? w->n : w->cap;
		for (int c = 0; c < STALL_CAUSES; c++)
			stalls[c] += w->stalls[c];
		for (int c = 0; c < FAIL_CAUSES; c++)
			fails[c] += w->fails[c];
		for (int s = 0; s <= MAX_SECONDS; s++) {
			per_s_ok[s] += w->per_s_ok[s];
			per_s_failed[s] += w->per_s_failed[s];
		}
		for (int b = 0; b < w->nbackends; b++) {
			int seen = 0;
			for (int j = 0; j < nbackends && !seen; j++)
				seen = backends[j] == w->backends[b];
			if (!seen && nbackends < MAX_BACKENDS)
				backends[nbackends++] = w->backends[b];
		}
	}
	double elapsed = (double)(now_ns() - start_ns) / 1e9;
	struct sample *all = malloc((size_t)(kept ? kept : 1) * sizeof(*all));
	long k = 0;
	for (int i = 0; i < threads; i++) {
		long n = ws[i].n < ws[i].cap ? ws[i].n : ws[i].cap;
		memcpy(all + k, ws[i].lat, (size_t)n * sizeof(*all));
		k += n;
	}
	uint64_t *total = sorted_field(all, kept, offsetof(struct sample, total));
	double sum = 0;
	for (long i = 0; i < kept; i++)
		sum += (double)total[i];
	long hist[HIST_BUCKETS] = {0};
	for (long i = 0, b = 0; i < kept; i++) {
		while (b < (long)HIST_BUCKETS - 1 && total[i] >= hist_le_us[b] * 1000)
			b++;
		hist[b]++;
	}
	for (char *c = first_error; *c; c++)
		if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
			*c = ' ';
	long seconds_seen = (long)elapsed + 1 > MAX_SECONDS + 1 ? MAX_SECONDS + 1 : (long)elapsed + 1;
	printf("{\"ok\": %ld, \"failed\": %ld, \"mismatched\": %ld, \"elapsed_s\": %.6f, "
	       "\"threads\": %d, \"p50_us\": %.3f, \"p90_us\": %.3f, \"p99_us\": %.3f, "
	       "\"p999_us\": %.3f, \"mean_us\": %.3f, \"max_us\": %.3f, ",
	       ok, failed, mismatched, elapsed, threads, pct_us(total, kept, 50),
	       pct_us(total, kept, 90), pct_us(total, kept, 99), pct_us(total, kept, 99.9),
	       kept ? sum / (double)kept / 1000.0 : 0.0,
	       kept ? (double)total[kept - 1] / 1000.0 : 0.0);
	uint64_t *connect = sorted_field(all, keep_connect ? kept : 0,
					 offsetof(struct sample, connect));
	uint64_t *rr = sorted_field(all, kept, offsetof(struct sample, rr));
	if (keep_connect)
		print_percentiles("connect_us", connect, kept);
	print_percentiles("rr_us", rr, kept);
	printf("\"hist\": {\"le_us\": [");
	for (size_t b = 0; b + 1 < HIST_BUCKETS; b++)
		printf(b ? ", %lu" : "%lu", (unsigned long)hist_le_us[b]);
	printf("], ");
	print_longs("count", hist, HIST_BUCKETS);
	printf("\"unit\": \"us\"}, \"stall_ms\": %llu, \"over_200ms\": {", STALL_NS / 1000000);
	for (int c = 0; c < STALL_CAUSES; c++)
		printf(c ? ", \"%s\": %ld" : "\"%s\": %ld", stall_names[c], stalls[c]);
	printf("}, \"failed_by_cause\": {");
	for (int c = 0; c < FAIL_CAUSES; c++)
		printf(c ? ", \"%s\": %ld" : "\"%s\": %ld", fail_names[c], fails[c]);
	printf("}, ");
	print_longs("per_s_ok", per_s_ok, seconds_seen);
	print_longs("per_s_failed", per_s_failed, seconds_seen);
	printf("\"backends_seen\": %d, \"first_error\": \"%s\"}\n", nbackends, first_error);
	free(total);
	free(connect);
	free(rr);
	free(all);
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
	if (threads < 1 || threads > 256 || seconds <= 0 || seconds > MAX_SECONDS ||
	    max_total < 1) {
		fprintf(stderr, "loadgen: THREADS 1..256, SECONDS 0..%d, MAX >= 1\n", MAX_SECONDS);
		return 2;
	}
	struct worker *ws = calloc((size_t)threads, sizeof(*ws));
	long cap = max_total / threads + 1;
	if (cap > 2000000)
		cap = 2000000;
	start_ns = now_ns();
	deadline_ns = start_ns + (uint64_t)(seconds * 1e9);
	for (int i = 0; ws && i < threads; i++) {
		ws[i].cap = cap;
		ws[i].lat = calloc((size_t)cap, sizeof(struct sample));
		if (!ws[i].lat || pthread_create(&ws[i].tid, NULL, fn, &ws[i]) != 0) {
			fprintf(stderr, "loadgen: out of memory or threads\n");
			return 1;
		}
	}
	if (!ws) {
		fprintf(stderr, "loadgen: out of memory\n");
		return 1;
	}
	for (int i = 0; i < threads; i++)
		pthread_join(ws[i].tid, NULL);
	report(ws, threads, fn == tcp_short);
	return 0;
}

// --- the backend

static int listen_fd, udp_fd;

static size_t peer_line(const struct sockaddr_in *peer, const struct sockaddr_in *local,
			char *out, size_t size)
{
	char addr[INET_ADDRSTRLEN], own[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &peer->sin_addr, addr, sizeof(addr));
	if (!local)
		return (size_t)snprintf(out, size, "%s %u\n", addr, ntohs(peer->sin_port));
	inet_ntop(AF_INET, &local->sin_addr, own, sizeof(own));
	return (size_t)snprintf(out, size, "%s %u %s\n", addr, ntohs(peer->sin_port), own);
}

static void *serve_tcp(void *arg)
{
	(void)arg;
	for (;;) {
		struct sockaddr_in peer, local;
		socklen_t plen = sizeof(peer), llen = sizeof(local);
		int fd = accept4(listen_fd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		set_timeouts(fd, 30);
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		char line[96], buf[512];
		getsockname(fd, (struct sockaddr *)&local, &llen);
		size_t len = peer_line(&peer, &local, line, sizeof(line));
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
		char buf[512], line[96];
		if (recvfrom(udp_fd, buf, sizeof(buf), 0, (struct sockaddr *)&peer, &plen) < 0)
			continue;
		size_t len = peer_line(&peer, NULL, line, sizeof(line));
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
