/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The owner fields of an event, from the task running the program. Shared by the capture
 * programs (dnsledger.bpf.c) and the libc lookup probes (lookups.bpf.c); include after
 * vmlinux.h, the libbpf helper headers and dnsledger.h.
 */
#ifndef DNSLEDGER_OWNER_H
#define DNSLEDGER_OWNER_H

static __always_inline void owner_from_current(struct sock_owner *o)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	struct task_struct *task = bpf_get_current_task_btf();

	o->pid = pid_tgid >> 32;
	o->tid = (__u32)pid_tgid;
	o->uid = (__u32)uid_gid;
	o->gid = uid_gid >> 32;
	o->cgroup_id = bpf_get_current_cgroup_id();
	o->netns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	/* The process's name (its main thread's comm), not the name of the sending thread. */
	if (BPF_CORE_READ_STR_INTO(&o->comm, task, group_leader, comm) < 0)
		bpf_get_current_comm(o->comm, sizeof(o->comm));
}

#endif
