/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Structures shared between the BPF programs and user space. Rust takes them from the
 * libbpf-cargo skeleton (`types` module); a Rust test asserts their sizes.
 * Every event starts with `kind` and `version`.
 */
#ifndef DNSLEDGER_H
#define DNSLEDGER_H

enum event_kind {
	EVENT_PACKET = 1,
	EVENT_EXEC = 2,
	EVENT_EXIT = 3,
	EVENT_STACK = 4,
	EVENT_BYPASS = 5,
};

/* What a bypass event saw (encrypted DNS past the host's resolver). */
enum bypass_kind {
	BYPASS_DOT = 1,	       /* TCP connect to port 853 (DNS over TLS) */
	BYPASS_DOQ = 2,	       /* UDP connect or first datagram to port 853 (DNS over QUIC) */
	BYPASS_DOH_LIKELY = 3, /* TCP or UDP to port 443 of an address on the DoH list */
};

enum direction {
	DIR_EGRESS = 1,
	DIR_INGRESS = 2,
};

/* --serve-side: which end of the conversation the local socket is (packet_event.side). The
 * client side is what a local process sends to a DNS port and receives from one; the server
 * side is what a local DNS server receives on its port and answers from it. */
enum side {
	SIDE_CLIENT = 0,
	SIDE_SERVER = 1,
};

/* Where the owner fields of a packet event come from. */
enum owner_source {
	OWNER_NONE = 0,
	/* The task running the program (the sender, on egress in process context). */
	OWNER_CURRENT = 1,
	/* Socket storage written by a sock_addr hook or an earlier egress packet. */
	OWNER_SOCKET = 2,
};

/* Drop and error counters, indexes into the per-CPU `counters` map. */
enum counter {
	CNT_PKT_RB_FULL = 0,   /* packet event lost: ring buffer full */
	CNT_EXEC_RB_FULL = 1,  /* exec event lost: ring buffer full */
	CNT_EXIT_RB_FULL = 2,  /* exit event lost: ring buffer full */
	CNT_LOAD_BYTES = 3,    /* bpf_skb_load_bytes failed: packet lost */
	CNT_STORAGE = 4,       /* socket storage could not be created */
	CNT_PKT_SENT = 5,      /* packet events emitted (not a drop) */
	CNT_STACK_RB_FULL = 6, /* --stacks: stack event lost, ring buffer full (packet kept) */
	CNT_STACK_FAILED = 7,  /* --stacks: bpf_get_stack found no user frame */
	CNT_STACK_SENT = 8,    /* --stacks: stack events emitted (not a drop) */
	CNT_BYPASS_RB_FULL = 9, /* bypass event lost: ring buffer full */
	CNT_BYPASS_SENT = 10,   /* bypass events emitted (not a drop) */
	CNT_MAX = 11,
};

/*
 * Numbers user space must agree with. Enum constants rather than #defines so that they reach
 * BTF and, through the zero-initialised globals in dnsledger.bpf.c, the skeleton's `types`
 * module: Rust reads them from there (crates/recorder/src/capture/abi.rs), never copies them.
 */
enum dnsledger_abi {
	DNSLEDGER_EVENT_VERSION = 1,
	MAX_PORTS = 16,
	COMM_LEN = 16,
	EXEC_FILENAME_LEN = 256,
	EXEC_ARGS_LEN = 4096,
	/* User frames kept per stack (--stacks). */
	STACK_DEPTH = 64,
	/* Room for IP and TCP/UDP headers in front of the DNS payload cap. */
	HEADER_ROOM = 128,
	/* Largest copy the programs can make (a 64 KiB DNS message and its headers); user space
	 * refuses a larger --max-payload. */
	COPY_LIMIT = 65536 + HEADER_ROOM,
	/* Port of DNS over TLS (TCP) and DNS over QUIC (UDP), RFC 7858 and RFC 9250. */
	DOT_PORT = 853,
	/* Port of HTTPS: DoH when the address is on the DoH list. */
	HTTPS_PORT = 443,
};

/* Owner of a socket, kept in socket storage. */
struct sock_owner {
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u64 cgroup_id;
	__u32 netns;
	__u32 _pad;
	char comm[COMM_LEN];
};

/* Header of a packet event; `cap_len` bytes of the L3 packet follow. */
struct packet_event {
	__u8 kind;
	__u8 version;
	__u8 direction;
	__u8 owner_source;
	__u32 cap_len;
	__u32 wire_len;
	__u8 side; /* enum side; was padding (0 = client side), so the layout is unchanged */
	__u8 _pad0;
	__u16 _pad1;
	__u64 ts_boot_ns;
	__u64 sock_cookie;
	struct sock_owner owner;
};

struct exec_event {
	__u8 kind;
	__u8 version;
	__u16 filename_len;
	__u32 args_len;
	__u64 ts_boot_ns;
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u64 cgroup_id;
	__u32 netns;
	__u32 _pad;
	char comm[COMM_LEN];
	char filename[EXEC_FILENAME_LEN];
	char args[EXEC_ARGS_LEN];
};

struct exit_event {
	__u8 kind;
	__u8 version;
	__u16 _pad0;
	__u32 pid;
	__u64 ts_boot_ns;
};

/* --stacks: the user stack of a send syscall on a DNS socket, kept per thread until the
 * syscall returns. */
struct pending_stack {
	__u64 ts_boot_ns;
	__u32 nr;
	__u32 _pad;
	__u64 ips[STACK_DEPTH];
};

/* --stacks: emitted just before the egress packet event it belongs to (same tid and socket
 * cookie); `nr` frames of `ips` are valid, innermost first. */
struct stack_event {
	__u8 kind;
	__u8 version;
	__u16 nr;
	__u32 pid;
	__u32 tid;
	__u32 _pad;
	__u64 ts_boot_ns;
	__u64 sock_cookie;
	__u64 ips[STACK_DEPTH];
};

/*
 * A connection (TCP connect, UDP connect or a UDP datagram sent without connect) to an
 * encrypted-DNS endpoint, seen by a cgroup sock_addr hook in the caller's context. `daddr` is
 * an IPv6 address; IPv4 destinations are IPv4-mapped (::ffff:a.b.c.d), as are the DoH list's
 * keys. `saddr`/`sport` are the socket's local address and port when it was already bound
 * (else zero: a connect hook runs before the kernel picks them).
 */
struct bypass_event {
	__u8 kind;
	__u8 version;
	__u8 bypass;   /* enum bypass_kind */
	__u8 protocol; /* IPPROTO_TCP or IPPROTO_UDP */
	__u16 dport;   /* host byte order */
	__u16 sport;   /* host byte order */
	__u64 ts_boot_ns;
	__u8 daddr[16];
	__u8 saddr[16];
	struct sock_owner owner;
};

/* The destination a UDP socket last reported a bypass event for (one event per socket and
 * destination, not one per datagram). */
struct bypass_seen {
	__u8 daddr[16];
	__u16 dport;
	__u16 _pad0;
	__u32 _pad1;
};

/* Key of the DoH endpoint map: an IPv6 address, IPv4 ones IPv4-mapped. */
struct doh_key {
	__u8 addr[16];
};

#endif
