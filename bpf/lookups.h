/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Structures of the libc lookup probes (lookups.bpf.c) shared with Rust, which takes them from
 * the lookups skeleton's `types` module (a Rust test asserts their sizes). The events go into
 * the capture programs' ring buffer (the same map, shared by fd), so their `kind` numbers are
 * distinct from dnsledger.h's `enum event_kind`: they start at 16.
 */
#ifndef DNSLEDGER_LOOKUPS_H
#define DNSLEDGER_LOOKUPS_H

enum lookup_event_kind {
	/* A thread entered an outermost lookup function (see lookup_start_event). */
	EVENT_LOOKUP_START = 16,
	/* It returned (see lookup_event). */
	EVENT_LOOKUP = 17,
};

/* Which libc function a lookup was. */
enum lookup_fn {
	LOOKUP_GETADDRINFO = 1,
	LOOKUP_GETHOSTBYNAME = 2,
	LOOKUP_GETHOSTBYNAME2 = 3,
	LOOKUP_GETNAMEINFO = 4,
};

/* Counters of the per-CPU `lookup_counters` map. */
enum lookup_counter {
	LCNT_RB_FULL = 0,   /* lookup or start event lost: ring buffer full */
	LCNT_SENT = 1,      /* lookup events emitted (not a drop) */
	LCNT_NESTED = 2,    /* calls inside an outer lookup of the same thread (no event) */
	LCNT_MAX = 3,
};

enum lookup_abi {
	/* Bytes of a name kept (a DNS name has at most 253 characters). */
	LOOKUP_NAME_LEN = 256,
	/* Result entries walked at most (getaddrinfo gives one per socket type: 3 per address). */
	LOOKUP_MAX_ADDRS = 16,
};

/* Emitted when a thread enters an outermost lookup: user space links the DNS packets the
 * thread sends until the lookup's return to that lookup. */
struct lookup_start_event {
	__u8 kind;
	__u8 version;
	__u8 fn;
	__u8 _pad0;
	__u32 tid;
	__u64 ts_boot_ns;
};

/* A lookup, emitted at its return. `addrs`: `naddrs` entries of the result (getaddrinfo's list,
 * gethostbyname's h_addr_list) or, for getnameinfo, the address asked about; `addr_family[i]`
 * is 4 or 6 and IPv4 addresses take the first 4 bytes. `name`: the name asked for, for
 * getnameinfo the host name returned. */
struct lookup_event {
	__u8 kind;
	__u8 version;
	__u8 fn;
	__u8 naddrs;
	/* getaddrinfo/getnameinfo: the return value (0 or EAI_*); gethostbyname*: 0, or 1 when
	 * it returned NULL (h_errno is thread-local storage and not read). */
	__s32 error;
	__u64 start_boot_ns;
	__u64 end_boot_ns;
	/* Address family asked for (getaddrinfo's hints->ai_family, gethostbyname2's af; AF_INET
	 * for gethostbyname), or given (getnameinfo's sockaddr): 0, 2 or 10. */
	__s32 family;
	__u32 _pad1;
	struct sock_owner owner;
	__u8 addr_family[LOOKUP_MAX_ADDRS];
	__u8 addrs[LOOKUP_MAX_ADDRS][16];
	char name[LOOKUP_NAME_LEN];
};

/* Per thread, between an outermost lookup's entry and return. */
struct lookup_stash {
	__u64 start_boot_ns;
	/* getaddrinfo: the `struct addrinfo **res` argument; getnameinfo: the host buffer. */
	__u64 out_ptr;
	__u64 out_len;
	__u32 pid;
	/* Lookup functions entered inside this one and not returned yet. */
	__u32 depth;
	__s32 family;
	__u8 fn;
	__u8 has_addr;
	__u16 _pad0;
	__u8 addr_in[16];
	char name[LOOKUP_NAME_LEN];
};

#endif
