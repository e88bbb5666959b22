/* TCP connect/request/response rate (netperf's TCP_CRR, minimal).
 *
 *   crr server PORT [THREADS]
 *       accept, read 1 byte, write 1 byte, close; forever (until killed)
 *   crr client HOST PORT SECONDS [THREADS]
 *       each thread: connect, write 1 byte, read 1 byte, close with SO_LINGER 0
 *       (RST: no TIME_WAIT, so ephemeral ports never run out); prints one JSON
 *       line {"connections": N, "errors": E, "seconds": S, "rate": N/S}
 *
 * Every connection's first packet is a new flow for conntrack and policy, which is
 * what iptables rule chains pay for linearly. Connect times out after 1 s.
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
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in target;
static double seconds;
static atomic_long total_ok, total_err;
static int listen_fd;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *server_thread(void *arg)
{
	(void)arg;
	for (;;) {
		int c = accept(listen_fd, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("accept");
			exit(1);
		}
		char b;
		if (read(c, &b, 1) == 1)
			(void)!write(c, &b, 1);
		close(c);
	}
	return NULL;
}

static void *client_thread(void *arg)
{
	(void)arg;
	long ok = 0, err = 0;
	double end = now() + seconds;
	struct linger lg = {1, 0};
	struct timeval tv = {1, 0};
	while (now() < end) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (s < 0) {
			err++;
			continue;
		}
		setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		char b = 'x';
		if (connect(s, (struct sockaddr *)&target, sizeof(target)) == 0 &&
		    write(s, &b, 1) == 1 && read(s, &b, 1) == 1)
			ok++;
		else
			err++;
		setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(s);
	}
	atomic_fetch_add(&total_ok, ok);
	atomic_fetch_add(&total_err, err);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "server") == 0) {
		int threads = argc > 3 ? atoi(argv[3]) : 1;
		listen_fd = socket(AF_INET, SOCK_STREAM, 0);
		int one = 1;
		setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
		if (bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(listen_fd, 4096) < 0) {
			perror("bind/listen");
			return 1;
		}
		printf("ready\n");
		fflush(stdout);
		pthread_t t[64];
		for (int i = 0; i < threads && i < 64; i++)
			pthread_create(&t[i], NULL, server_thread, NULL);
		pthread_join(t[0], NULL);
		return 0;
	}
	if (argc >= 5 && strcmp(argv[1], "client") == 0) {
		target.sin_family = AF_INET;
		target.sin_port = htons(atoi(argv[3]));
		if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1) {
			fprintf(stderr, "bad address %s\n", argv[2]);
			return 2;
		}
		seconds = atof(argv[4]);
		int threads = argc > 5 ? atoi(argv[5]) : 1;
		pthread_t t[64];
		double t0 = now();
		for (int i = 0; i < threads && i < 64; i++)
			pthread_create(&t[i], NULL, client_thread, NULL);
		for (int i = 0; i < threads && i < 64; i++)
			pthread_join(t[i], NULL);
		double took = now() - t0;
		long ok = atomic_load(&total_ok), err = atomic_load(&total_err);
		printf("{\"connections\": %ld, \"errors\": %ld, \"seconds\": %.4f, \"rate\": %.1f}\n",
		       ok, err, took, ok / took);
		return 0;
	}
	fprintf(stderr, "usage: crr server PORT [THREADS] | crr client HOST PORT SECONDS [THREADS]\n");
	return 2;
}
