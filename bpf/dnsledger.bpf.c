// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * dnsledger capture programs.
 *
 * Built only from program types that load on kernels without fentry/kprobes:
 *  - cgroup sock_addr hooks (connect/sendmsg/recvmsg, v4 and v6) remember the process that
 *    uses a DNS socket, in socket storage;
 *  - cgroup_skb egress/ingress copy the L3 packet of DNS traffic into the ring buffer, with the
 *    socket owner (on ingress the current task is NOT the receiver, e.g. on loopback it is
 *    the sender: the owner always comes from socket storage there);
 *  - with --serve-side, the server side too (ingress to / egress from a DNS port), tagged
 *    SIDE_SERVER, its owner from socket storage (the recvmsg hooks and the server's own
 *    answers fill it; see server_owner);
 *  - the same connect/sendmsg hooks report connections to encrypted-DNS endpoints (port 853,
 *    and 443 of an address on the DoH list) as bypass events, unless --no-bypass;
 *  - tp_btf sched_process_exec/exit report exe, argv and exits so that user space knows
 *    processes that are gone by the time it looks;
 *  - with --stacks only (not loaded otherwise): a program on the syscalls:sys_enter_*
 *    tracepoints of the send calls (sendto, sendmsg, sendmmsg, write, writev) takes the user
 *    stack when the socket talks to a DNS port and keeps it per thread; the egress program,
 *    which runs in that syscall, emits it as a stack event just before the packet; one on the
 *    sys_exit_* tracepoints forgets it. cgroup_skb and sock_addr programs cannot call
 *    bpf_get_stack (verified on 6.18: "program of this type cannot use helper
 *    bpf_get_stack#67"), tracing programs can.
 * The programs only observe: cgroup_skb programs always return 1 (pass), sock_addr hooks 1
 * (allow). DNS is parsed in user space, never here.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "dnsledger.h"
#include "owner.h"

/*
 * The kernel only asks whether the program is GPL-compatible: the tp_btf programs read
 * struct task_struct through BTF pointers and call GPL-only helpers (bpf_probe_read_kernel*,
 * bpf_probe_read_user, bpf_get_stack, bpf_get_current_task_btf), which it refuses otherwise
 * ("Cannot access kernel 'struct task_struct' from non-GPL compatible program"). This file is
 * (GPL-2.0-only OR Apache-2.0), see the SPDX line; "GPL" is the true one of the strings the
 * kernel accepts ("Dual BSD/GPL" would claim a BSD licence it does not have).
 */
char LICENSE[] SEC("license") = "GPL";

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
/* IPv6 extension headers (uapi defines, not in vmlinux.h). */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04

/* Configuration, written by user space before load. Ports in host byte order. */
const volatile __u16 dns_ports[MAX_PORTS] = {};
const volatile __u32 n_ports = 0;
/* Bytes of the L3 packet to copy at most (headers + DNS payload cap). */
const volatile __u32 max_copy = 4096 + HEADER_ROOM;
/* The recorder's own process: never recorded. */
const volatile __u32 self_tgid = 0;
/* Wake the reader only once this many bytes wait in the ring (0: on every record). The reader
 * also polls on a short timer, so a quiet host costs no wakeup per packet and a busy one gets
 * large batches. */
const volatile __u32 wakeup_bytes = 0;
/* --stacks: egress packets of a thread with a pending stack are preceded by a stack event. */
const volatile bool stacks_enabled = false;
/* Encrypted-DNS bypass: connections to port 853 (DoT, DoQ) and to 443 of a listed DoH address.
 * Off with --no-bypass; the DNS path does not look at it. */
const volatile bool bypass_enabled = false;
/* --serve-side: also keep the server side of conversations with a local DNS server (ingress to
 * and egress from a DNS port), tagged SIDE_SERVER. Off by default. */
const volatile bool serve_side = false;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

static __always_inline __u64 wakeup_flag(void)
{
	if (!wakeup_bytes)
		return 0;
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
									    : BPF_RB_NO_WAKEUP;
}

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_owner);
} sk_owner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* --stacks: the stack of the send syscall each thread is in (sized by user space: 1 entry
 * when --stacks is off). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct pending_stack);
} pending_stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pending_stack);
} stack_scratch SEC(".maps");

/* Encrypted-DNS bypass: the DoH endpoint addresses (filled by user space from the DoH list
 * before the programs attach; sized by user space), and per UDP socket the destination last
 * reported. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct doh_key);
	__type(value, __u8);
} doh_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct bypass_seen);
} sk_bypass SEC(".maps");

/* Zero-initialised globals make libbpf-cargo emit these types into the skeleton. */
struct stack_event _stack_event = {};
struct packet_event _packet_event = {};
struct exec_event _exec_event = {};
struct exit_event _exit_event = {};
struct bypass_event _bypass_event = {};
/* ... and these enums (the numbers user space must agree with: see dnsledger.h). */
enum dnsledger_abi _abi = 0;
enum event_kind _event_kind = 0;
enum direction _direction = 0;
enum owner_source _owner_source = 0;
enum counter _counter = 0;
enum bypass_kind _bypass_kind = 0;
enum side _side = 0;

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline bool is_dns_port(__u16 port)
{
	for (int i = 0; i < MAX_PORTS; i++) {
		if (i >= n_ports)
			break;
		if (dns_ports[i] == port)
			return true;
	}
	return false;
}

struct l4 {
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u32 payload_len;
};

/* Finds the UDP/TCP ports of an L3 packet. Returns 0 on success. */
static __always_inline int parse_l4(struct __sk_buff *skb, struct l4 *out)
{
	__u32 off = 0;
	__u8 proto = 0;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return -1;
		/* A non-first fragment has no L4 header. */
		if (ip.frag_off & bpf_htons(0x1fff))
			return -1;
		off = ip.ihl * 4;
		proto = ip.protocol;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return -1;
		off = sizeof(ip6);
		proto = ip6.nexthdr;
		for (int i = 0; i < 6; i++) {
			struct ipv6_opt_hdr opt;

			if (proto == NEXTHDR_HOP || proto == NEXTHDR_ROUTING ||
			    proto == NEXTHDR_DEST) {
				if (bpf_skb_load_bytes(skb, off, &opt, sizeof(opt)))
					return -1;
				proto = opt.nexthdr;
				off += (opt.hdrlen + 1) * 8;
			} else if (proto == NEXTHDR_FRAGMENT) {
				struct frag_hdr fh;

				if (bpf_skb_load_bytes(skb, off, &fh, sizeof(fh)))
					return -1;
				if (fh.frag_off & bpf_htons(0xfff8))
					return -1;
				proto = fh.nexthdr;
				off += sizeof(fh);
			} else if (proto == IPPROTO_AH) {
				if (bpf_skb_load_bytes(skb, off, &opt, sizeof(opt)))
					return -1;
				proto = opt.nexthdr;
				off += (opt.hdrlen + 2) * 4;
			} else {
				break;
			}
		}
	} else {
		return -1;
	}

	if (proto == IPPROTO_UDP_) {
		struct udphdr udp;

		if (bpf_skb_load_bytes(skb, off, &udp, sizeof(udp)))
			return -1;
		out->sport = bpf_ntohs(udp.source);
		out->dport = bpf_ntohs(udp.dest);
		out->tcp_flags = 0;
		off += sizeof(udp);
	} else if (proto == IPPROTO_TCP_) {
		__u8 hdr[14];

		if (bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)))
			return -1;
		out->sport = (hdr[0] << 8) | hdr[1];
		out->dport = (hdr[2] << 8) | hdr[3];
		out->tcp_flags = hdr[13];
		off += (hdr[12] >> 4) * 4;
	} else {
		return -1;
	}
	out->proto = proto;
	out->payload_len = skb->len > off ? skb->len - off : 0;
	return 0;
}

/* Emits one packet event of at most TIER bytes of packet data. */
#define EMIT_TIER(TIER)                                                                    \
	if (len <= (TIER)) {                                                               \
		struct packet_event *e =                                                   \
			bpf_ringbuf_reserve(&events, sizeof(struct packet_event) + (TIER), 0); \
		if (!e) {                                                                  \
			count(CNT_PKT_RB_FULL);                                            \
			return;                                                            \
		}                                                                          \
		e->kind = EVENT_PACKET;                                                    \
		e->version = DNSLEDGER_EVENT_VERSION;                                      \
		e->direction = dir;                                                        \
		e->owner_source = src;                                                     \
		e->cap_len = len;                                                          \
		e->wire_len = skb->len;                                                    \
		e->side = side;                                                            \
		e->_pad0 = 0;                                                              \
		e->_pad1 = 0;                                                              \
		e->ts_boot_ns = ts;                                                        \
		e->sock_cookie = cookie;                                                   \
		e->owner = *owner;                                                         \
		/* Re-check the bound on a fresh register: clang may otherwise test */     \
		/* a copy and leave the verifier without a range for the length. */        \
		__u64 n = len;                                                             \
		barrier_var(n);                                                            \
		if (n < 1 || n > (TIER) ||                                                 \
		    bpf_skb_load_bytes(skb, 0, (void *)(e + 1), n)) {                      \
			count(CNT_LOAD_BYTES);                                             \
			bpf_ringbuf_discard(e, 0);                                         \
			return;                                                            \
		}                                                                          \
		bpf_ringbuf_submit(e, wakeup_flag());                                                  \
		count(CNT_PKT_SENT);                                                       \
		return;                                                                    \
	}

static __always_inline void emit_packet(struct __sk_buff *skb, __u8 dir, __u8 src, __u8 side,
					struct sock_owner *owner)
{
	__u64 ts = bpf_ktime_get_boot_ns();
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u64 len = skb->len;

	if (len > max_copy)
		len = max_copy;
	if (len > COPY_LIMIT)
		len = COPY_LIMIT;

	EMIT_TIER(512)
	EMIT_TIER(1600)
	EMIT_TIER(4352)
	EMIT_TIER(16512)
	EMIT_TIER(COPY_LIMIT)
}

/* --stacks: the sending thread's pending stack, if its current syscall left one. */
static __always_inline void emit_stack(struct __sk_buff *skb, struct sock_owner *owner)
{
	struct pending_stack *ps;
	struct stack_event *e;
	__u32 tid = owner->tid;

	ps = bpf_map_lookup_elem(&pending_stacks, &tid);
	if (!ps)
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_STACK_RB_FULL);
		return;
	}
	e->kind = EVENT_STACK;
	e->version = DNSLEDGER_EVENT_VERSION;
	e->nr = ps->nr > STACK_DEPTH ? STACK_DEPTH : ps->nr;
	e->pid = owner->pid;
	e->tid = tid;
	e->_pad = 0;
	e->ts_boot_ns = ps->ts_boot_ns;
	e->sock_cookie = bpf_get_socket_cookie(skb);
	__builtin_memcpy(e->ips, ps->ips, sizeof(e->ips));
	bpf_ringbuf_submit(e, wakeup_flag());
	count(CNT_STACK_SENT);
}

/*
 * --serve-side: the owner of a packet on the server side of a conversation. Never the current
 * task on ingress (softirq, or on loopback the client that sent the query) nor for TCP
 * segments without payload (a SYN-ACK leaves from the listener in whatever context the SYN
 * arrived, on loopback the client's). The server's answer (UDP, and TCP data written by the
 * server) leaves in the server's context: that task is the owner and is remembered in socket
 * storage, as the recvmsg hooks remember a server that asks for the query's source address.
 */
static __always_inline __u8 server_owner(__u8 dir, struct l4 *l4, struct bpf_sock *sk,
					 struct sock_owner *stored, struct sock_owner *owner)
{
	__u32 cur = bpf_get_current_pid_tgid() >> 32;

	if (dir == DIR_EGRESS && cur != 0 && l4->payload_len > 0 &&
	    (l4->proto == IPPROTO_UDP_ || !stored || stored->pid == cur)) {
		owner_from_current(owner);
		if (sk) {
			if (!stored)
				stored = bpf_sk_storage_get(&sk_owner, sk, 0,
							    BPF_SK_STORAGE_GET_F_CREATE);
			if (stored)
				*stored = *owner;
			else
				count(CNT_STORAGE);
		}
		return OWNER_CURRENT;
	}
	if (stored) {
		*owner = *stored;
		return OWNER_SOCKET;
	}
	return OWNER_NONE;
}

static __always_inline void handle_skb(struct __sk_buff *skb, __u8 dir)
{
	struct l4 l4 = {};
	struct sock_owner owner = {};
	struct sock_owner *stored = NULL;
	struct bpf_sock *sk;
	bool sport_dns, dport_dns, client;
	__u8 src = OWNER_NONE;

	if (parse_l4(skb, &l4))
		return;
	sport_dns = is_dns_port(l4.sport);
	dport_dns = is_dns_port(l4.dport);
	/*
	 * Record the client side of a conversation: what a local process sends to a DNS port
	 * and what it receives from one. A local server's side (egress from / ingress to a DNS
	 * port only) is the same traffic seen again and is skipped unless --serve-side asks for
	 * it. When both ports are DNS ports (mDNS 5353 <-> 5353) both sides are kept, as client.
	 */
	client = dir == DIR_EGRESS ? dport_dns : sport_dns;
	if (!client && !(serve_side && (dir == DIR_EGRESS ? sport_dns : dport_dns)))
		return;
	/* Pure TCP ACKs carry nothing user space needs. */
	if (l4.proto == IPPROTO_TCP_ && l4.payload_len == 0 &&
	    !(l4.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST)))
		return;

	sk = skb->sk;
	if (sk)
		sk = bpf_sk_fullsock(sk);
	if (sk)
		stored = bpf_sk_storage_get(&sk_owner, sk, 0, 0);

	if (!client) {
		src = server_owner(dir, &l4, sk, stored, &owner);
	} else if (dir == DIR_EGRESS) {
		__u32 cur = bpf_get_current_pid_tgid() >> 32;

		/*
		 * UDP is sent in the sender's context. TCP data may leave from softirq
		 * (retransmits, ACK-clocked sends), where the current task is unrelated:
		 * there the socket's recorded owner wins.
		 */
		if (cur != 0 && (l4.proto == IPPROTO_UDP_ || !stored || stored->pid == cur)) {
			owner_from_current(&owner);
			src = OWNER_CURRENT;
			if (sk) {
				if (!stored)
					stored = bpf_sk_storage_get(&sk_owner, sk, 0,
								    BPF_SK_STORAGE_GET_F_CREATE);
				if (stored)
					*stored = owner;
				else
					count(CNT_STORAGE);
			}
		} else if (stored) {
			owner = *stored;
			src = OWNER_SOCKET;
		}
	} else if (stored) {
		owner = *stored;
		src = OWNER_SOCKET;
	}
	if (src == OWNER_NONE) {
		owner.uid = bpf_get_socket_uid(skb);
		owner.cgroup_id = bpf_skb_cgroup_id(skb);
	}
	if (self_tgid && owner.pid == self_tgid)
		return;
	if (stacks_enabled && client && src == OWNER_CURRENT && l4.payload_len > 0)
		emit_stack(skb, &owner);
	emit_packet(skb, dir, src, client ? SIDE_CLIENT : SIDE_SERVER, &owner);
}

SEC("cgroup_skb/egress")
int dns_egress(struct __sk_buff *skb)
{
	handle_skb(skb, DIR_EGRESS);
	return 1;
}

SEC("cgroup_skb/ingress")
int dns_ingress(struct __sk_buff *skb)
{
	handle_skb(skb, DIR_INGRESS);
	return 1;
}

/* Remembers the process using a socket that talks to a DNS port. Returns true if the port is
 * a DNS port (the caller then looks no further). */
static __always_inline bool note_owner(struct bpf_sock_addr *ctx)
{
	struct sock_owner *stored;
	struct bpf_sock *sk = ctx->sk;

	if (!sk || !is_dns_port(bpf_ntohs(ctx->user_port)))
		return false;
	stored = bpf_sk_storage_get(&sk_owner, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!stored) {
		count(CNT_STORAGE);
		return true;
	}
	owner_from_current(stored);
	return true;
}

/* The destination of a sock_addr call as an IPv6 address (IPv4 ones IPv4-mapped). */
static __always_inline void dest_addr(struct bpf_sock_addr *ctx, bool v6, __u8 out[16])
{
	__u32 *w = (__u32 *)out;

	if (v6) {
		w[0] = ctx->user_ip6[0];
		w[1] = ctx->user_ip6[1];
		w[2] = ctx->user_ip6[2];
		w[3] = ctx->user_ip6[3];
	} else {
		w[0] = 0;
		w[1] = 0;
		w[2] = bpf_htonl(0xffff);
		w[3] = ctx->user_ip4;
	}
}

/*
 * Encrypted DNS past the host's resolver: a connect (TCP or UDP) or an unconnected UDP send to
 * port 853, or to port 443 of an address on the DoH list, becomes one bypass event. Runs only
 * for ports that are not DNS ports, after a two-compare port check: other traffic pays that
 * and nothing else (443 also pays one hash lookup).
 */
static __always_inline void note_bypass(struct bpf_sock_addr *ctx, bool v6)
{
	struct bpf_sock *sk = ctx->sk;
	struct bypass_event *e;
	struct doh_key key;
	__u16 port = bpf_ntohs(ctx->user_port);
	__u32 proto;
	__u8 kind;

	if (!bypass_enabled || (port != DOT_PORT && port != HTTPS_PORT) || !sk)
		return;
	proto = ctx->protocol;
	if (proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_)
		return;
	dest_addr(ctx, v6, key.addr);
	if (port == DOT_PORT) {
		kind = proto == IPPROTO_TCP_ ? BYPASS_DOT : BYPASS_DOQ;
	} else {
		if (!bpf_map_lookup_elem(&doh_endpoints, &key))
			return;
		kind = BYPASS_DOH_LIKELY;
	}
	if (self_tgid && (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return;
	/* An unconnected UDP socket runs sendmsg for every datagram: report each destination of
	 * a UDP socket once (until it sends elsewhere). */
	if (proto == IPPROTO_UDP_) {
		struct bypass_seen *seen =
			bpf_sk_storage_get(&sk_bypass, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

		if (seen) {
			__u32 *a = (__u32 *)seen->daddr, *b = (__u32 *)key.addr;

			if (seen->dport == port && a[0] == b[0] && a[1] == b[1] && a[2] == b[2] &&
			    a[3] == b[3])
				return;
			__builtin_memcpy(seen->daddr, key.addr, sizeof(key.addr));
			seen->dport = port;
		} else {
			count(CNT_STORAGE);
		}
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_BYPASS_RB_FULL);
		return;
	}
	e->kind = EVENT_BYPASS;
	e->version = DNSLEDGER_EVENT_VERSION;
	e->bypass = kind;
	e->protocol = proto;
	e->dport = port;
	e->sport = sk->src_port;
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	__builtin_memcpy(e->daddr, key.addr, sizeof(key.addr));
	{
		__u32 *w = (__u32 *)e->saddr;

		if (v6) {
			w[0] = sk->src_ip6[0];
			w[1] = sk->src_ip6[1];
			w[2] = sk->src_ip6[2];
			w[3] = sk->src_ip6[3];
		} else {
			w[0] = 0;
			w[1] = 0;
			w[2] = bpf_htonl(0xffff);
			w[3] = sk->src_ip4;
		}
	}
	__builtin_memset(&e->owner, 0, sizeof(e->owner));
	owner_from_current(&e->owner);
	bpf_ringbuf_submit(e, wakeup_flag());
	count(CNT_BYPASS_SENT);
}

SEC("cgroup/connect4")
int dns_connect4(struct bpf_sock_addr *ctx)
{
	if (!note_owner(ctx))
		note_bypass(ctx, false);
	return 1;
}

SEC("cgroup/connect6")
int dns_connect6(struct bpf_sock_addr *ctx)
{
	if (!note_owner(ctx))
		note_bypass(ctx, true);
	return 1;
}

SEC("cgroup/sendmsg4")
int dns_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (!note_owner(ctx))
		note_bypass(ctx, false);
	return 1;
}

SEC("cgroup/sendmsg6")
int dns_sendmsg6(struct bpf_sock_addr *ctx)
{
	if (!note_owner(ctx))
		note_bypass(ctx, true);
	return 1;
}

/* --serve-side: a DNS server that asks for a query's source address (recvfrom/recvmsg on its
 * UDP socket bound to a DNS port) is remembered as the socket's owner, so that the queries it
 * receives next carry it (ingress runs in softirq or in the client's context). */
static __always_inline void note_server_owner(struct bpf_sock_addr *ctx)
{
	struct sock_owner *stored;
	struct bpf_sock *sk = ctx->sk;

	if (!serve_side || !sk || !is_dns_port(sk->src_port))
		return;
	stored = bpf_sk_storage_get(&sk_owner, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!stored) {
		count(CNT_STORAGE);
		return;
	}
	owner_from_current(stored);
}

SEC("cgroup/recvmsg4")
int dns_recvmsg4(struct bpf_sock_addr *ctx)
{
	if (!note_owner(ctx))
		note_server_owner(ctx);
	return 1;
}

SEC("cgroup/recvmsg6")
int dns_recvmsg6(struct bpf_sock_addr *ctx)
{
	if (!note_owner(ctx))
		note_server_owner(ctx);
	return 1;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(dns_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct exec_event *e;
	struct mm_struct *mm;
	unsigned long arg_start, arg_end, len;
	__u64 uid_gid = bpf_get_current_uid_gid();
	long n;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_EXEC_RB_FULL);
		return 0;
	}
	e->kind = EVENT_EXEC;
	e->version = DNSLEDGER_EVENT_VERSION;
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->pid = p->tgid;
	e->ppid = p->real_parent->tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->netns = BPF_CORE_READ(p, nsproxy, net_ns, ns.inum);
	e->_pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));

	n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), bprm->filename);
	e->filename_len = n > 0 ? n - 1 : 0;

	mm = p->mm;
	arg_start = BPF_CORE_READ(mm, arg_start);
	arg_end = BPF_CORE_READ(mm, arg_end);
	len = arg_end > arg_start ? arg_end - arg_start : 0;
	if (len > EXEC_ARGS_LEN)
		len = EXEC_ARGS_LEN;
	if (len && bpf_probe_read_user(e->args, len, (void *)arg_start) == 0)
		e->args_len = len;
	else
		e->args_len = 0;
	bpf_ringbuf_submit(e, wakeup_flag());
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(dns_exit, struct task_struct *p)
{
	struct exit_event *e;

	/* Only the end of a whole process matters, not of each thread. */
	if (p->pid != p->tgid)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_EXIT_RB_FULL);
		return 0;
	}
	e->kind = EVENT_EXIT;
	e->version = DNSLEDGER_EVENT_VERSION;
	e->_pad0 = 0;
	e->pid = p->tgid;
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	bpf_ringbuf_submit(e, wakeup_flag());
	return 0;
}

/*
 * --stacks. Syscall numbers are x86_64's (vmlinux.h is generated for x86_64; another
 * architecture needs its own numbers).
 *
 * The two programs are attached to the per-syscall tracepoints of the send calls only
 * (syscalls:sys_enter_<call> and sys_exit_<call> for each of SEND_SYSCALLS in user space),
 * never to raw sys_enter/sys_exit: a raw program runs on every syscall of the host, these run
 * only for the five calls. The kernel still takes its syscall-tracepoint path for every
 * syscall while any of them is attached and tests one bitmap bit per syscall (measured in
 * bench/stacks.py).
 */
#define NR_write 1
#define NR_writev 20
#define NR_sendto 44
#define NR_sendmsg 46
#define NR_sendmmsg 307
#define S_IFMT_ 00170000
#define S_IFSOCK_ 0140000
#define AF_INET_ 2
#define AF_INET6_ 10

/* The context of a syscalls:sys_enter_* tracepoint (its `format` file in tracefs): the
 * syscall number is an int, the arguments follow at offset 16; only the first three are
 * declared (every send call has at least three). */
struct syscall_enter_ctx {
	__u64 common;
	int nr;
	int _pad;
	unsigned long args[3];
};
/* Offset of the fifth argument in a sys_enter_sendto record. */
#define SYS_ENTER_ARG4 (16 + 4 * 8)

/* Port of a user-space sockaddr_in/sockaddr_in6 (same offset in both), 0 if unreadable. */
static __always_inline __u16 user_sockaddr_port(const void *addr)
{
	__u16 fam_port[2] = {};

	if (!addr || bpf_probe_read_user(fam_port, sizeof(fam_port), addr))
		return 0;
	if (fam_port[0] != AF_INET_ && fam_port[0] != AF_INET6_)
		return 0;
	return bpf_ntohs(fam_port[1]);
}

/*
 * True if send syscall `nr` sends to a DNS port: `fd` (its first argument) is an inet socket
 * whose destination (the syscall's address, else the connected peer) is a DNS port. `msg` is
 * its second argument (sendmsg/sendmmsg: the message), `addr` its fifth (sendto: the address).
 */
static __always_inline bool sends_to_dns(unsigned int fd, const void *msg, const void *addr,
					 int nr)
{
	/*
	 * Every write()/writev() on the host comes here, mostly on files and pipes: the walk
	 * from the task to the socket reads BTF pointers directly (fault-safe loads, cheaper than
	 * a bpf_probe_read_kernel call each); only the fd array slot, a pointer to a pointer the
	 * verifier does not type, is copied.
	 */
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file *f = NULL;
	struct socket *sock;
	struct sock *sk;
	__u16 family, port = 0;

	if (!fdt || fd >= fdt->max_fds)
		return false;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fdt->fd[fd]) || !f)
		return false;
	f = bpf_core_cast(f, struct file);
	if ((f->f_inode->i_mode & S_IFMT_) != S_IFSOCK_)
		return false;
	sock = bpf_core_cast(f->private_data, struct socket);
	sk = sock->sk;
	if (!sk)
		return false;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET_ && family != AF_INET6_)
		return false;
	if (nr == NR_sendto) {
		port = user_sockaddr_port(addr);
	} else if (nr == NR_sendmsg || nr == NR_sendmmsg) {
		/* A struct mmsghdr starts with its struct user_msghdr. */
		const struct user_msghdr *um = msg;
		void *name = NULL;

		if (um && !bpf_probe_read_user(&name, sizeof(name), &um->msg_name))
			port = user_sockaddr_port(name);
	}
	if (!port)
		port = bpf_ntohs(sk->__sk_common.skc_dport);
	return port && is_dns_port(port);
}

/* Attached to syscalls:sys_enter_{sendto,sendmsg,sendmmsg,write,writev} by user space. */
SEC("tracepoint")
int dns_stack_enter(struct syscall_enter_ctx *ctx)
{
	struct pending_stack *s;
	__u64 pid_tgid;
	__u32 zero = 0, tid;
	const void *addr = NULL;
	int nr = ctx->nr;
	long n;

	if (!stacks_enabled)
		return 0;
	if (nr != NR_sendto && nr != NR_sendmsg && nr != NR_sendmmsg && nr != NR_write &&
	    nr != NR_writev)
		return 0;
	pid_tgid = bpf_get_current_pid_tgid();
	if (self_tgid && (pid_tgid >> 32) == self_tgid)
		return 0;
	/*
	 * The kernel refuses to attach a program that reads past the end of a tracepoint's
	 * record (write, writev and sendmsg have 3 arguments: 40 bytes). sendto's fifth argument
	 * is therefore copied, not read directly.
	 */
	if (nr == NR_sendto &&
	    bpf_probe_read_kernel(&addr, sizeof(addr), (void *)ctx + SYS_ENTER_ARG4))
		return 0;
	if (!sends_to_dns((unsigned int)ctx->args[0], (const void *)ctx->args[1], addr, nr))
		return 0;
	s = bpf_map_lookup_elem(&stack_scratch, &zero);
	if (!s)
		return 0;
	n = bpf_get_stack(ctx, s->ips, sizeof(s->ips), BPF_F_USER_STACK);
	if (n <= 0) {
		count(CNT_STACK_FAILED);
		return 0;
	}
	s->nr = n / sizeof(__u64);
	s->_pad = 0;
	s->ts_boot_ns = bpf_ktime_get_boot_ns();
	tid = (__u32)pid_tgid;
	bpf_map_update_elem(&pending_stacks, &tid, s, BPF_ANY);
	return 0;
}

/* Attached to the matching syscalls:sys_exit_* tracepoints: the send is over. */
SEC("tracepoint")
int dns_stack_exit(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	/* A lookup takes no lock, a delete does: most of these syscalls left nothing. */
	if (stacks_enabled && bpf_map_lookup_elem(&pending_stacks, &tid))
		bpf_map_delete_elem(&pending_stacks, &tid);
	return 0;
}
