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
use crate::lookups::{LookupFn, LookupInfo, addr_of, family_of_af};

use super::lookup_skel::types::{
    lookup_abi, lookup_event, lookup_event_kind, lookup_fn, lookup_start_event,
};

/// Kinds of the lookup probes' events (`bpf/lookups.h`, from its skeleton).
pub const EVENT_LOOKUP_START: u8 = lookup_event_kind::EVENT_LOOKUP_START.0 as u8;
pub const EVENT_LOOKUP: u8 = lookup_event_kind::EVENT_LOOKUP.0 as u8;
/// Result entries a lookup event holds at most (`LOOKUP_MAX_ADDRS`).
pub const LOOKUP_MAX_ADDRS: usize = lookup_abi::LOOKUP_MAX_ADDRS.0 as usize;

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
    Exit {
        pid: u32,
        ts_ns: i64,
    },
    Stack(StackInfo),
    Bypass(BypassInfo),
    /// A thread entered a libc lookup (UTC ns).
    LookupStart {
        tid: u32,
        ts_ns: i64,
    },
    /// It returned.
    Lookup(LookupInfo),
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

/// The pid of an exec event, without parsing the rest (the lookup probes scan the maps of new
/// processes); `None` for other records.
pub fn exec_pid(data: &[u8]) -> Option<u32> {
    if data.first() != Some(&EVENT_EXEC) {
        return None;
    }
    let at = std::mem::offset_of!(exec_event, pid);
    let bytes = data.get(at..at + 4)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
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
        EVENT_LOOKUP_START => {
            let e: lookup_start_event = read(data).ok_or(EventError::Short(data.len()))?;
            Ok(Event::LookupStart {
                tid: e.tid,
                ts_ns: clock.to_utc(e.ts_boot_ns),
            })
        }
        EVENT_LOOKUP => {
            let e: lookup_event = read(data).ok_or(EventError::Short(data.len()))?;
            let func = match u32::from(e.r#fn) {
                f if f == lookup_fn::LOOKUP_GETADDRINFO.0 => LookupFn::GetAddrInfo,
                f if f == lookup_fn::LOOKUP_GETHOSTBYNAME.0 => LookupFn::GetHostByName,
                f if f == lookup_fn::LOOKUP_GETHOSTBYNAME2.0 => LookupFn::GetHostByName2,
                f if f == lookup_fn::LOOKUP_GETNAMEINFO.0 => LookupFn::GetNameInfo,
                _ => return Err(EventError::Unknown { kind, version }),
            };
            // The owner has the capture programs' layout (both include dnsledger.h).
            let o: sock_owner = read(&data[std::mem::offset_of!(lookup_event, owner)..])
                .ok_or(EventError::Short(data.len()))?;
            let n = usize::from(e.naddrs).min(LOOKUP_MAX_ADDRS);
            let mut addrs: Vec<std::net::IpAddr> = Vec::with_capacity(n);
            for i in 0..n {
                // getaddrinfo lists each address once per socket type: keep the first.
                if let Some(ip) = addr_of(e.addr_family[i], e.addrs[i])
                    && !addrs.contains(&ip)
                {
                    addrs.push(ip);
                }
            }
            Ok(Event::Lookup(LookupInfo {
                func,
                start_ns: clock.to_utc(e.start_boot_ns),
                end_ns: clock.to_utc(e.end_boot_ns),
                name: c_str(&e.name),
                family: family_of_af(e.family),
                error: e.error,
                addrs,
                owner: owner(&o),
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
    fn exec_pid_without_parsing() {
        let e = exec_event {
            kind: EVENT_EXEC,
            version: EVENT_VERSION,
            pid: 4242,
            ..Default::default()
        };
        assert_eq!(exec_pid(&bytes_of(&e)), Some(4242));
        assert_eq!(exec_pid(&[EVENT_PACKET, EVENT_VERSION, 0, 0]), None);
        assert_eq!(exec_pid(&[EVENT_EXEC, EVENT_VERSION]), None);
    }

    #[test]
    fn parses_lookup_events() {
        let s = lookup_start_event {
            kind: EVENT_LOOKUP_START,
            version: EVENT_VERSION,
            tid: 77,
            ts_boot_ns: 100,
            ..Default::default()
        };
        let Event::LookupStart { tid, ts_ns } =
            parse(&bytes_of(&s), &Clock::with_offset(1)).expect("start")
        else {
            panic!("not a lookup start")
        };
        assert_eq!((tid, ts_ns), (77, 101));
        let mut e = lookup_event {
            kind: EVENT_LOOKUP,
            version: EVENT_VERSION,
            r#fn: lookup_fn::LOOKUP_GETADDRINFO.0 as u8,
            naddrs: 4,
            error: 0,
            start_boot_ns: 100,
            end_boot_ns: 300,
            family: 10,
            ..Default::default()
        };
        e.owner.pid = 5;
        e.owner.tid = 77;
        for (d, c) in e.name.iter_mut().zip(b"host.example\0") {
            *d = *c as i8;
        }
        // Two addresses, each listed twice (one per socket type).
        e.addr_family[..4].copy_from_slice(&[4, 4, 6, 6]);
        e.addrs[0][..4].copy_from_slice(&[192, 0, 2, 1]);
        e.addrs[1][..4].copy_from_slice(&[192, 0, 2, 1]);
        e.addrs[2] = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .expect("ip")
            .octets();
        e.addrs[3] = e.addrs[2];
        let Event::Lookup(l) = parse(&bytes_of(&e), &Clock::with_offset(0)).expect("lookup") else {
            panic!("not a lookup")
        };
        assert_eq!(l.func, LookupFn::GetAddrInfo);
        assert_eq!(l.name, "host.example");
        assert_eq!((l.start_ns, l.end_ns, l.family), (100, 300, 6));
        assert_eq!((l.owner.pid, l.owner.tid), (5, 77));
        let want: Vec<std::net::IpAddr> = ["192.0.2.1", "2001:db8::1"]
            .iter()
            .map(|a| a.parse().expect("ip"))
            .collect();
        assert_eq!(l.addrs, want);
        e.r#fn = 9;
        assert!(parse(&bytes_of(&e), &Clock::with_offset(0)).is_err());
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
