/*
 * Test client for `dnsledger record --stacks` (tests/e2e/bpf_stacks.rs): sends one DNS query
 * for argv[1] (or COUNT in a row) to ADDR (default 127.0.0.1) port 53 (or PORT) with the send
 * call argv[2] names, from a function with a name the test looks for in the recorded stack,
 * waits for the answer, then stays alive a little so that the recorder can symbolize its
 * stack. Built with -g -O0 (frame pointers). Send calls:
 *   udp          sendto() on an unconnected UDP socket
 *   udp-send     send() on a connected UDP socket (the sendto syscall without an address)
 *   udp-sendmsg  sendmsg() on an unconnected UDP socket
 *   udp-sendmmsg sendmmsg() of one message on an unconnected UDP socket
 *   tcp          write() on a TCP connection
 *   tcp-writev   writev() of the length prefix and the query on a TCP connection
 *
 * The send itself is one call deeper (send_packet): the kernel walks frame pointers, and
 * libc's syscall wrappers set up no frame, so the function that calls sendto()/write() is the
 * one frame such a walk cannot see; its caller is seen.
 */
#define _GNU_SOURCE /* sendmmsg */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

enum mode { UDP_SENDTO, UDP_SEND, UDP_SENDMSG, UDP_SENDMMSG, TCP_WRITE, TCP_WRITEV };

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

static __attribute__((noinline)) int send_packet(int fd, enum mode mode, unsigned char *q,
						  size_t len, struct sockaddr_in *sa)
{
	struct iovec iov[2] = {{.iov_base = q, .iov_len = len}};
	struct mmsghdr mm = {0};
	ssize_t n;

	switch (mode) {
	case TCP_WRITE:
		n = write(fd, q, len);
		break;
	case TCP_WRITEV:
		/* The 2-byte length prefix and the message in two pieces, as glibc does. */
		iov[0].iov_len = 2;
		iov[1].iov_base = q + 2;
		iov[1].iov_len = len - 2;
		n = writev(fd, iov, 2);
		break;
	case UDP_SEND:
		n = send(fd, q, len, 0);
		break;
	case UDP_SENDMSG:
	case UDP_SENDMMSG:
		mm.msg_hdr.msg_name = sa;
		mm.msg_hdr.msg_namelen = sizeof(*sa);
		mm.msg_hdr.msg_iov = iov;
		mm.msg_hdr.msg_iovlen = 1;
		if (mode == UDP_SENDMSG)
			n = sendmsg(fd, &mm.msg_hdr, 0);
		else
			n = sendmmsg(fd, &mm, 1, 0) == 1 ? (ssize_t)mm.msg_len : -1;
		break;
	default:
		n = sendto(fd, q, len, 0, (const struct sockaddr *)sa, sizeof(*sa));
		break;
	}
	return n == (ssize_t)len ? 0 : -1;
}

/* Sends the query and reads the answer; returns the answer's length or -1. */
int dnsledger_test_send_query(const char *name, enum mode mode, const char *addr, int port)
{
	int tcp = mode == TCP_WRITE || mode == TCP_WRITEV;
	unsigned char q[600], a[4096];
	struct sockaddr_in sa = {0};
	struct timeval tv = {.tv_sec = 5};
	size_t qlen = build_query(name, q + 2, sizeof(q) - 2);
	ssize_t got;
	int fd;

	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		return -1;
	fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if ((tcp || mode == UDP_SEND) && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -1;
	if (tcp) {
		q[0] = (unsigned char)(qlen >> 8);
		q[1] = (unsigned char)qlen;
		if (send_packet(fd, mode, q, qlen + 2, &sa))
			return -1;
	} else if (send_packet(fd, mode, q + 2, qlen, &sa)) {
		return -1;
	}
	got = recv(fd, a, sizeof(a), 0);
	close(fd);
	return (int)got;
}

int main(int argc, char **argv)
{
	static const char *const modes[] = {"udp", "udp-send", "udp-sendmsg", "udp-sendmmsg",
					    "tcp", "tcp-writev"};
	int n = -1, mode = -1;

	for (int i = 0; argc >= 3 && i < (int)(sizeof(modes) / sizeof(modes[0])); i++)
		if (strcmp(argv[2], modes[i]) == 0)
			mode = i;
	if (mode < 0) {
		fprintf(stderr,
			"usage: %s NAME udp|udp-send|udp-sendmsg|udp-sendmmsg|tcp|tcp-writev "
			"[COUNT [LINGER_MS [PORT [ADDR]]]]\n",
			argv[0]);
		return 2;
	}
	long count = argc > 3 ? atol(argv[3]) : 1;
	for (long i = 0; i < count; i++) {
		n = dnsledger_test_send_query(argv[1], (enum mode)mode,
					      argc > 6 ? argv[6] : "127.0.0.1",
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
