/*
 * Test client for `dnsledger record --stacks` (tests/integration/bpf_stacks.rs): sends one DNS
 * query for argv[1] (or COUNT in a row) to 127.0.0.1:53 (or PORT) over UDP (argv[2] = "udp")
 * or TCP ("tcp") from a function
 * with a name the test looks for in the recorded stack, waits for the answer, then stays
 * alive a little so that the recorder can symbolize its stack. Built with -g -O0 (frame
 * pointers).
 *
 * The send itself is one call deeper (send_packet): the kernel walks frame pointers, and
 * libc's syscall wrappers set up no frame, so the function that calls sendto()/write() is the
 * one frame such a walk cannot see; its caller is seen.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static size_t build_query(const char *name, unsigned char *buf, size_t cap)
{
	size_t n = 0;
	const char *p = name;
	unsigned char hdr[12] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};

	memcpy(buf, hdr, sizeof(hdr));
	n = sizeof(hdr);
	while (*p && n + 70 < cap) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);

		buf[n++] = (unsigned char)len;
		memcpy(buf + n, p, len);
		n += len;
		p += len;
		if (*p == '.')
			p++;
	}
	buf[n++] = 0;
	buf[n++] = 0; /* QTYPE A */
	buf[n++] = 1;
	buf[n++] = 0; /* QCLASS IN */
	buf[n++] = 1;
	return n;
}

static __attribute__((noinline)) int send_packet(int fd, int tcp, const unsigned char *q,
						  size_t len, const struct sockaddr_in *sa)
{
	if (tcp)
		return write(fd, q, len) == (ssize_t)len ? 0 : -1;
	return sendto(fd, q, len, 0, (const struct sockaddr *)sa, sizeof(*sa)) == (ssize_t)len ? 0
												: -1;
}

/* Sends the query and reads the answer; returns the answer's length or -1. */
int dnsledger_test_send_query(const char *name, int tcp, int port)
{
	unsigned char q[600], a[4096];
	struct sockaddr_in sa = {0};
	struct timeval tv = {.tv_sec = 5};
	size_t qlen = build_query(name, q + 2, sizeof(q) - 2);
	ssize_t got;
	int fd;

	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (tcp) {
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			return -1;
		q[0] = (unsigned char)(qlen >> 8);
		q[1] = (unsigned char)qlen;
		if (send_packet(fd, 1, q, qlen + 2, &sa))
			return -1;
	} else if (send_packet(fd, 0, q + 2, qlen, &sa)) {
		return -1;
	}
	got = recv(fd, a, sizeof(a), 0);
	close(fd);
	return (int)got;
}

int main(int argc, char **argv)
{
	int n;

	if (argc < 3) {
		fprintf(stderr, "usage: %s NAME udp|tcp [COUNT [LINGER_MS [PORT]]]\n", argv[0]);
		return 2;
	}
	long count = argc > 3 ? atol(argv[3]) : 1;
	for (long i = 0; i < count; i++) {
		n = dnsledger_test_send_query(argv[1], strcmp(argv[2], "tcp") == 0,
					      argc > 5 ? atoi(argv[5]) : 53);
		if (n <= 0) {
			perror("query");
			return 1;
		}
	}
	printf("answer %d bytes\n", n);
	fflush(stdout);
	/* The recorder symbolizes while the process lives; its first stack (libc's debug
	 * information, if installed) can take it a few hundred milliseconds. */
	usleep((argc > 4 ? atol(argv[4]) : 1000) * 1000);
	return 0;
}
