//! Ring-buffer records -> typed events. Pure: no libbpf calls, unit-tested with byte arrays.

use std::mem::size_of;

use super::abi::{
    BYPASS_DOH_LIKELY, BYPASS_DOQ, BYPASS_DOT, DIR_EGRESS, EVENT_BYPASS, EVENT_EXEC, EVENT_EXIT,
    EVENT_PACKET, EVENT_STACK, EVENT_VERSION, OWNER_NONE, SIDE_SERVER,
};
use super::skel::types::{
    bypass_event, exec_event, exit_event, packet_event, sock_owner, stack_event,
};
use super::{Direction, KernelOwner, RawPacket, Side};
use crate::bypass::{BypassInfo, BypassKind, from_kernel_addr};

/// A process that called execve, as seen by the kernel at that moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecInfo {
    pub ts_ns: i64,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub netns: u32,
    pub comm: String,
    /// Path given to execve.
    pub filename: String,
    /// argv joined by spaces (at most 4 KiB of the original).
    pub cmdline: String,
}

/// The user stack of a send syscall (`--stacks`). It precedes, in the ring buffer, the
/// egress packet of the same thread and socket that the syscall sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackInfo {
    pub pid: u32,
    pub tid: u32,
    pub sock_cookie: u64,
    /// Return addresses, innermost first (the first is the instruction after the syscall).
    pub ips: Vec<u64>,
}

#[derive(Debug)]
pub enum Event<'a> {
    Packet(RawPacket<'a>),
    Exec(ExecInfo),
    Exit { pid: u32, ts_ns: i64 },
    Stack(StackInfo),
    Bypass(BypassInfo),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("ring buffer record too short: {0} bytes")]
    Short(usize),
    #[error("ring buffer record of unknown kind {kind} version {version}")]
    Unknown { kind: u8, version: u8 },
}

/// Converts kernel boot-time timestamps (`bpf_ktime_get_boot_ns`) to UTC.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i64,
}

fn clock_ns(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// CLOCK_BOOTTIME now, in ns: the kernel's event clock (`bpf_ktime_get_boot_ns`).
pub fn boot_now() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME) as u64
}

impl Clock {
    /// Offset between CLOCK_REALTIME and CLOCK_BOOTTIME, now.
    pub fn now() -> Self {
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - boot,
        }
    }
    pub fn with_offset(offset_ns: i64) -> Self {
        Self { offset_ns }
    }
    pub fn to_utc(&self, boot_ns: u64) -> i64 {
        (boot_ns as i64).saturating_add(self.offset_ns)
    }
}

fn read<T: Copy>(data: &[u8]) -> Option<T> {
    if data.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the slice holds at least size_of::<T>() bytes; T is a plain-old-data #[repr(C)]
    // struct generated from C (integers and byte arrays only), valid for any bit pattern;
    // read_unaligned copes with the ring buffer's 8-byte alignment.
    Some(unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<T>()) })
}

fn c_str(bytes: &[i8]) -> String {
    let bytes: Vec<u8> = bytes
        .iter()
        .map(|&b| b as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn owner(o: &sock_owner) -> KernelOwner {
    let mut comm = [0u8; 16];
    for (d, s) in comm.iter_mut().zip(o.comm.iter()) {
        *d = *s as u8;
    }
    KernelOwner {
        pid: o.pid,
        tid: o.tid,
        uid: o.uid,
        gid: o.gid,
        cgroup_id: o.cgroup_id,
        netns: o.netns,
        comm,
    }
}

/// Joins a NUL-separated argv block with spaces; a trailing NUL is dropped.
pub fn join_args(args: &[u8]) -> String {
    let trimmed = args.strip_suffix(&[0]).unwrap_or(args);
    let joined: Vec<u8> = trimmed
        .iter()
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect();
    String::from_utf8_lossy(&joined).into_owned()
}

/// Parses one ring-buffer record.
pub fn parse<'a>(data: &'a [u8], clock: &Clock) -> Result<Event<'a>, EventError> {
    let (kind, version) = match data {
        [k, v, ..] => (*k, *v),
        _ => return Err(EventError::Short(data.len())),
    };
    if version != EVENT_VERSION {
        return Err(EventError::Unknown { kind, version });
    }
    match kind {
        EVENT_PACKET => {
            let h: packet_event = read(data).ok_or(EventError::Short(data.len()))?;
            let body = &data[size_of::<packet_event>()..];
            let cap = (h.cap_len as usize).min(body.len());
            Ok(Event::Packet(RawPacket {
                ts_ns: clock.to_utc(h.ts_boot_ns),
                direction: if h.direction == DIR_EGRESS {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                side: if h.side == SIDE_SERVER {
                    Side::Server
                } else {
                    Side::Client
                },
                owner: (h.owner_source != OWNER_NONE).then(|| owner(&h.owner)),
                sock_cookie: h.sock_cookie,
                wire_len: h.wire_len,
                data: &body[..cap],
            }))
        }
        EVENT_EXEC => {
            let e: exec_event = read(data).ok_or(EventError::Short(data.len()))?;
            let args_len = (e.args_len as usize).min(e.args.len());
            let args: Vec<u8> = e.args[..args_len].iter().map(|&b| b as u8).collect();
            Ok(Event::Exec(ExecInfo {
                ts_ns: clock.to_utc(e.ts_boot_ns),
                pid: e.pid,
                ppid: e.ppid,
                uid: e.uid,
                gid: e.gid,
                cgroup_id: e.cgroup_id,
                netns: e.netns,
                comm: c_str(&e.comm),
                filename: c_str(&e.filename),
                cmdline: join_args(&args),
            }))
        }
        EVENT_EXIT => {
            let e: exit_event = read(data).ok_or(EventError::Short(data.len()))?;
            Ok(Event::Exit {
                pid: e.pid,
                ts_ns: clock.to_utc(e.ts_boot_ns),
            })
        }
        EVENT_STACK => {
            let e: stack_event = read(data).ok_or(EventError::Short(data.len()))?;
            let nr = (e.nr as usize).min(e.ips.len());
            Ok(Event::Stack(StackInfo {
                pid: e.pid,
                tid: e.tid,
                sock_cookie: e.sock_cookie,
                ips: e.ips[..nr].to_vec(),
            }))
        }
        EVENT_BYPASS => {
            let e: bypass_event = read(data).ok_or(EventError::Short(data.len()))?;
            let bypass = match e.bypass {
                BYPASS_DOT => BypassKind::Dot,
                BYPASS_DOQ => BypassKind::Doq,
                BYPASS_DOH_LIKELY => BypassKind::DohLikely,
                _ => return Err(EventError::Unknown { kind, version }),
            };
            Ok(Event::Bypass(BypassInfo {
                ts_ns: clock.to_utc(e.ts_boot_ns),
                kind: bypass,
                server: from_kernel_addr(e.daddr),
                server_port: e.dport,
                client: from_kernel_addr(e.saddr),
                client_port: e.sport,
                owner: owner(&e.owner),
            }))
        }
        _ => Err(EventError::Unknown { kind, version }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is a #[repr(C)] plain-old-data struct; viewing it as bytes is sound.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn parses_packet_event_with_payload() {
        let mut h = packet_event {
            kind: EVENT_PACKET,
            version: EVENT_VERSION,
            direction: DIR_EGRESS,
            owner_source: 1,
            cap_len: 3,
            wire_len: 100,
            ts_boot_ns: 1_000,
            sock_cookie: 42,
            ..Default::default()
        };
        h.owner.pid = 7;
        h.owner.tid = 8;
        h.owner.comm[..3].copy_from_slice(&[b'd' as i8, b'i' as i8, b'g' as i8]);
        let mut data = bytes_of(&h);
        data.extend_from_slice(&[0x45, 1, 2, 0xff]);
        let clock = Clock::with_offset(5);
        let Event::Packet(p) = parse(&data, &clock).expect("packet") else {
            panic!("not a packet")
        };
        assert_eq!(p.ts_ns, 1_005);
        assert_eq!(p.direction, Direction::Egress);
        assert_eq!(p.side, Side::Client);
        assert_eq!(p.sock_cookie, 42);
        assert_eq!(p.wire_len, 100);
        assert_eq!(p.data, &[0x45, 1, 2]);
        let o = p.owner.expect("owner");
        assert_eq!((o.pid, o.tid), (7, 8));
        assert_eq!(o.comm_str(), "dig");
    }

    #[test]
    fn packet_without_owner() {
        let h = packet_event {
            kind: EVENT_PACKET,
            version: EVENT_VERSION,
            direction: 2,
            owner_source: OWNER_NONE,
            side: SIDE_SERVER,
            ..Default::default()
        };
        let data = bytes_of(&h);
        let Event::Packet(p) = parse(&data, &Clock::with_offset(0)).expect("packet") else {
            panic!("not a packet")
        };
        assert_eq!(p.direction, Direction::Ingress);
        assert_eq!(p.side, Side::Server);
        assert!(p.owner.is_none());
        assert!(p.data.is_empty());
    }

    #[test]
    fn parses_exec_event() {
        let mut e = exec_event {
            kind: EVENT_EXEC,
            version: EVENT_VERSION,
            pid: 10,
            ppid: 1,
            ..Default::default()
        };
        let args = b"dig\0+short\0example.com\0";
        for (d, s) in e.args.iter_mut().zip(args.iter()) {
            *d = *s as i8;
        }
        e.args_len = args.len() as u32;
        for (d, s) in e.filename.iter_mut().zip(b"/usr/bin/dig\0".iter()) {
            *d = *s as i8;
        }
        let data = bytes_of(&e);
        let Event::Exec(x) = parse(&data, &Clock::with_offset(0)).expect("exec") else {
            panic!("not exec")
        };
        assert_eq!(x.pid, 10);
        assert_eq!(x.ppid, 1);
        assert_eq!(x.filename, "/usr/bin/dig");
        assert_eq!(x.cmdline, "dig +short example.com");
    }

    #[test]
    fn parses_stack_event() {
        let mut e = stack_event {
            kind: EVENT_STACK,
            version: EVENT_VERSION,
            nr: 3,
            pid: 10,
            tid: 11,
            sock_cookie: 99,
            ..Default::default()
        };
        e.ips[..4].copy_from_slice(&[0x401000, 0x401100, 0x7f00_0000_1000, 0xdead]);
        let data = bytes_of(&e);
        let Event::Stack(s) = parse(&data, &Clock::with_offset(0)).expect("stack") else {
            panic!("not a stack")
        };
        assert_eq!((s.pid, s.tid, s.sock_cookie), (10, 11, 99));
        assert_eq!(s.ips, vec![0x401000, 0x401100, 0x7f00_0000_1000]);
        // A count beyond the array is clamped.
        e.nr = 1000;
        let Event::Stack(s) = parse(&bytes_of(&e), &Clock::with_offset(0)).expect("stack") else {
            panic!("not a stack")
        };
        assert_eq!(s.ips.len(), 64);
    }

    #[test]
    fn parses_bypass_event() {
        let mut e = bypass_event {
            kind: EVENT_BYPASS,
            version: EVENT_VERSION,
            bypass: BYPASS_DOT,
            protocol: 6,
            dport: 853,
            sport: 0,
            ts_boot_ns: 10,
            ..Default::default()
        };
        e.daddr[10..].copy_from_slice(&[0xff, 0xff, 127, 0, 0, 40]);
        e.owner.pid = 5;
        let Event::Bypass(b) = parse(&bytes_of(&e), &Clock::with_offset(1)).expect("bypass") else {
            panic!("not a bypass event")
        };
        assert_eq!(b.kind, BypassKind::Dot);
        assert_eq!(
            b.server,
            "127.0.0.40".parse::<std::net::IpAddr>().expect("ip")
        );
        assert_eq!((b.server_port, b.ts_ns, b.owner.pid), (853, 11, 5));
        assert!(b.client.is_unspecified());
        e.bypass = 99;
        assert!(parse(&bytes_of(&e), &Clock::with_offset(0)).is_err());
    }

    #[test]
    fn rejects_short_and_unknown() {
        assert_eq!(
            parse(&[1], &Clock::with_offset(0)).unwrap_err(),
            EventError::Short(1)
        );
        assert_eq!(
            parse(&[1, 1, 0], &Clock::with_offset(0)).unwrap_err(),
            EventError::Short(3)
        );
        assert_eq!(
            parse(&[9, 1, 0, 0], &Clock::with_offset(0)).unwrap_err(),
            EventError::Unknown {
                kind: 9,
                version: 1
            }
        );
    }
}
