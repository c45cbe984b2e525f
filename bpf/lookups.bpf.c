// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * libc lookups: uprobes and uretprobes on getaddrinfo, gethostbyname, gethostbyname2 and
 * getnameinfo of every glibc and musl the recorder finds mapped (user space attaches them by
 * library path with pid -1, i.e. in every process that maps that file).
 *
 * One call is one event: the entry of an outermost lookup stashes its arguments per thread and
 * emits a small start event; lookup functions the thread enters before that one returns
 * (glibc's own nesting, or a program calling one from a callback) only count as nested; the
 * outermost return emits the lookup with its error code and result addresses. The events go
 * into the capture programs' ring buffer (shared by fd), so that user space sees a thread's
 * start event, its DNS packets and its lookup event in the order they happened.
 *
 * x86_64 layouts of struct addrinfo, struct hostent and struct sockaddr_in/in6 (glibc and
 * musl agree on them); another architecture needs its own offsets.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "dnsledger.h"
#include "lookups.h"
#include "owner.h"

/* See dnsledger.bpf.c: the programs read task_struct and call GPL-only helpers. */
char LICENSE[] SEC("license") = "GPL";

#define AF_INET_ 2
#define AF_INET6_ 10

/* The recorder's own process: never recorded. */
const volatile __u32 self_tgid = 0;

/* The capture programs' ring buffer: user space gives this map the fd of dnsledger.bpf.c's
 * `events` before load (the size here is replaced by that map's). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LCNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} lookup_counters SEC(".maps");

/* Threads inside a lookup, by thread id. LRU: a thread that never returns (killed inside the
 * call, longjmp out of a callback) does not hold an entry for ever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct lookup_stash);
} lookup_stashes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lookup_stash);
} lookup_scratch SEC(".maps");

/* Zero-initialised globals make libbpf-cargo emit these types into the skeleton. */
struct lookup_start_event _lookup_start_event = {};
struct lookup_event _lookup_event = {};
enum lookup_event_kind _lookup_event_kind = 0;
enum lookup_fn _lookup_fn = 0;
enum lookup_counter _lookup_counter = 0;
enum lookup_abi _lookup_abi = 0;
enum dnsledger_abi _abi = 0;

static __always_inline void lcount(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&lookup_counters, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

/* struct addrinfo (x86_64): ai_family at 4, ai_addr at 24, ai_next at 40. */
#define AI_FAMILY_OFF 4
#define AI_ADDR_OFF 24
#define AI_NEXT_OFF 40
/* struct hostent (x86_64): h_addrtype at 16, h_addr_list at 24. */
#define H_ADDRTYPE_OFF 16
#define H_ADDR_LIST_OFF 24

/* Copies the address of a user sockaddr_in/in6 into `out`; returns 4, 6 or 0. */
static __always_inline __u8 read_sockaddr(const void *sa, __u8 out[16])
{
	__u16 family = 0;

	if (!sa || bpf_probe_read_user(&family, sizeof(family), sa))
		return 0;
	if (family == AF_INET_) {
		if (bpf_probe_read_user(out, 4, sa + 4))
			return 0;
		return 4;
	}
	if (family == AF_INET6_) {
		if (bpf_probe_read_user(out, 16, sa + 8))
			return 0;
		return 6;
	}
	return 0;
}

static __always_inline int lookup_enter(__u8 fn, const char *name, __s32 family, __u64 out_ptr,
					__u64 out_len, const void *sa)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid, zero = 0;
	struct lookup_stash *st, *s;
	struct lookup_start_event *e;

	if (self_tgid && (pid_tgid >> 32) == self_tgid)
		return 0;
	st = bpf_map_lookup_elem(&lookup_stashes, &tid);
	/* A stash of another process is a thread id reused after a lookup that never returned. */
	if (st && st->pid == (pid_tgid >> 32)) {
		st->depth++;
		lcount(LCNT_NESTED);
		return 0;
	}
	s = bpf_map_lookup_elem(&lookup_scratch, &zero);
	if (!s)
		return 0;
	s->start_boot_ns = bpf_ktime_get_boot_ns();
	s->out_ptr = out_ptr;
	s->out_len = out_len;
	s->pid = pid_tgid >> 32;
	s->depth = 0;
	s->family = family;
	s->fn = fn;
	s->_pad0 = 0;
	s->name[0] = 0;
	__builtin_memset(s->addr_in, 0, sizeof(s->addr_in));
	s->has_addr = 0;
	if (name && bpf_probe_read_user_str(s->name, sizeof(s->name), name) < 0)
		s->name[0] = 0;
	if (sa) {
		s->has_addr = read_sockaddr(sa, s->addr_in);
		s->family = s->has_addr == 4 ? AF_INET_ : s->has_addr == 6 ? AF_INET6_ : 0;
	}
	bpf_map_update_elem(&lookup_stashes, &tid, s, BPF_ANY);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		lcount(LCNT_RB_FULL);
		return 0;
	}
	e->kind = EVENT_LOOKUP_START;
	e->version = DNSLEDGER_EVENT_VERSION;
	e->fn = fn;
	e->_pad0 = 0;
	e->tid = tid;
	e->ts_boot_ns = s->start_boot_ns;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

/* int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
 *                 struct addrinfo **res) */
SEC("uprobe")
int BPF_UPROBE(lookup_getaddrinfo, const char *node, const char *service, const void *hints,
	       void *res)
{
	__s32 family = 0;

	if (hints && bpf_probe_read_user(&family, sizeof(family), hints + AI_FAMILY_OFF))
		family = 0;
	return lookup_enter(LOOKUP_GETADDRINFO, node, family, (__u64)res, 0, NULL);
}

/* struct hostent *gethostbyname(const char *name) */
SEC("uprobe")
int BPF_UPROBE(lookup_gethostbyname, const char *name)
{
	return lookup_enter(LOOKUP_GETHOSTBYNAME, name, AF_INET_, 0, 0, NULL);
}

/* struct hostent *gethostbyname2(const char *name, int af) */
SEC("uprobe")
int BPF_UPROBE(lookup_gethostbyname2, const char *name, int af)
{
	return lookup_enter(LOOKUP_GETHOSTBYNAME2, name, af, 0, 0, NULL);
}

/* int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
 *                 char *serv, socklen_t servlen, int flags) */
SEC("uprobe")
int BPF_UPROBE(lookup_getnameinfo, const void *sa, __u32 salen, char *host, __u32 hostlen)
{
	return lookup_enter(LOOKUP_GETNAMEINFO, NULL, 0, (__u64)host, hostlen, sa);
}

/* getaddrinfo's result list: up to LOOKUP_MAX_ADDRS entries. */
static __always_inline void walk_addrinfo(struct lookup_event *e, __u64 res_pp)
{
	void *ai = NULL;
	__u8 n = 0;

	if (!res_pp || bpf_probe_read_user(&ai, sizeof(ai), (void *)res_pp))
		return;
	for (int i = 0; i < LOOKUP_MAX_ADDRS; i++) {
		void *sa = NULL;
		__u8 fam;

		if (!ai)
			break;
		if (bpf_probe_read_user(&sa, sizeof(sa), ai + AI_ADDR_OFF))
			break;
		fam = read_sockaddr(sa, e->addrs[n & (LOOKUP_MAX_ADDRS - 1)]);
		if (fam) {
			e->addr_family[n & (LOOKUP_MAX_ADDRS - 1)] = fam;
			n++;
		}
		if (bpf_probe_read_user(&ai, sizeof(ai), ai + AI_NEXT_OFF))
			break;
	}
	e->naddrs = n;
}

/* gethostbyname's struct hostent: the addresses of h_addr_list. */
static __always_inline void walk_hostent(struct lookup_event *e, void *h)
{
	__s32 type = 0;
	char **list = NULL;
	__u8 n = 0;

	if (bpf_probe_read_user(&type, sizeof(type), h + H_ADDRTYPE_OFF) ||
	    bpf_probe_read_user(&list, sizeof(list), h + H_ADDR_LIST_OFF) || !list)
		return;
	if (type != AF_INET_ && type != AF_INET6_)
		return;
	for (int i = 0; i < LOOKUP_MAX_ADDRS; i++) {
		char *a = NULL;
		__u8 *slot = e->addrs[n & (LOOKUP_MAX_ADDRS - 1)];

		if (bpf_probe_read_user(&a, sizeof(a), &list[i]) || !a)
			break;
		if (type == AF_INET_) {
			if (bpf_probe_read_user(slot, 4, a))
				break;
			e->addr_family[n & (LOOKUP_MAX_ADDRS - 1)] = 4;
		} else {
			if (bpf_probe_read_user(slot, 16, a))
				break;
			e->addr_family[n & (LOOKUP_MAX_ADDRS - 1)] = 6;
		}
		n++;
	}
	e->naddrs = n;
}

/* The return of any of the four: the outermost one emits the lookup. */
SEC("uretprobe")
int BPF_URETPROBE(lookup_return, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct lookup_stash *st;
	struct lookup_event *e;

	st = bpf_map_lookup_elem(&lookup_stashes, &tid);
	if (!st)
		return 0;
	if (st->depth) {
		st->depth--;
		return 0;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		lcount(LCNT_RB_FULL);
		bpf_map_delete_elem(&lookup_stashes, &tid);
		return 0;
	}
	e->kind = EVENT_LOOKUP;
	e->version = DNSLEDGER_EVENT_VERSION;
	e->fn = st->fn;
	e->naddrs = 0;
	e->start_boot_ns = st->start_boot_ns;
	e->end_boot_ns = bpf_ktime_get_boot_ns();
	e->family = st->family;
	e->_pad1 = 0;
	__builtin_memset(&e->owner, 0, sizeof(e->owner));
	owner_from_current(&e->owner);
	__builtin_memset(e->addr_family, 0, sizeof(e->addr_family));
	__builtin_memcpy(e->name, st->name, sizeof(e->name));
	switch (st->fn) {
	case LOOKUP_GETADDRINFO:
		e->error = (__s32)ret;
		if (ret == 0)
			walk_addrinfo(e, st->out_ptr);
		break;
	case LOOKUP_GETHOSTBYNAME:
	case LOOKUP_GETHOSTBYNAME2:
		e->error = ret ? 0 : 1;
		if (ret)
			walk_hostent(e, (void *)ret);
		break;
	case LOOKUP_GETNAMEINFO:
		e->error = (__s32)ret;
		e->name[0] = 0;
		if (ret == 0 && st->out_ptr && st->out_len &&
		    bpf_probe_read_user_str(e->name, sizeof(e->name), (void *)st->out_ptr) < 0)
			e->name[0] = 0;
		if (st->has_addr) {
			__builtin_memcpy(e->addrs[0], st->addr_in, sizeof(st->addr_in));
			e->addr_family[0] = st->has_addr;
			e->naddrs = 1;
		}
		break;
	default:
		e->error = (__s32)ret;
	}
	bpf_map_delete_elem(&lookup_stashes, &tid);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	lcount(LCNT_SENT);
	return 0;
}
