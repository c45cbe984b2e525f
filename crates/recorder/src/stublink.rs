//! The requester behind a local stub resolver (`stub-link`, off with `--no-stub-link`).
//!
//! A caching resolver on a loopback address (dnsmasq, unbound, systemd-resolved on
//! 127.0.0.53) asks upstream on behalf of local processes. The recorder sees both client sides:
//! the app's query to the stub (a *downstream* row D, attributed to the app) and the stub's own
//! query upstream (an *upstream* row U, attributed to the stub). The server side of the stub is
//! not recorded (see `handle_skb` in the BPF code). This module links the two, in user space,
//! from messages the pairer already holds:
//!
//! **Linking rule.** A query U sent by process P is linked to every downstream query D such that
//! - D went to a loopback address (127.0.0.0/8, ::1) and P owns the socket bound to D's server
//!   address and port (UDP: any socket bound there, TCP: the listening one, which a server
//!   that forks per TCP connection leaves open in the child; a wildcard bind 0.0.0.0 or ::
//!   counts), read from D's network namespace's table (`/proc/<D's pid>/net/{udp,tcp}{,6}`,
//!   or P's when D's process has gone and P is in that namespace; never another namespace's,
//!   where the same address and port may be another server's: checked by `/proc/PID/ns/net`)
//!   and `/proc/P/fd`, cached by (namespace, address). The recorder reads the ring buffer
//!   every 50 ms, so P may have exited by then: a worker a server forks per TCP connection
//!   (dnsmasq) lives as long as its connection. Then a live process with P's name (`comm`) in
//!   that namespace that holds the socket (the server it was forked from) stands in for P.
//!   So an unrelated process that asks the same name at the same moment is never linked (its
//!   parent's sockets do not count either: a child of a DNS server that runs another program
//!   is not that server);
//! - D has U's first question name (case-insensitive: both are the lower-cased normal form) and
//!   type;
//! - D was pending at U's query time: `D.query_ts <= U.query_ts` and D not yet answered, given
//!   up (pair timeout) or evicted. This is the window `[D.query_ts, D.response_ts or timeout]`,
//!   evaluated as messages arrive: the kernel's ring buffer delivers D's query before U's (the
//!   stub reads D before it sends U), so no row waits longer than the pairer already holds it.
//!
//! Then U's row names every such D's process (`requester_pids`, `requester_comms`,
//! `requester_exes`, one entry per pid, in the order of the D queries), and each D's row says
//! `stub_cache = miss`. Coalesced queries (several D waiting for one U) all appear in U's row;
//! parallel or retried U (dnsmasq's `all-servers`, a retry after a timeout) each name the same
//! requesters. A D that is answered with no U in its window is `stub_cache = hit` (the stub's
//! cache or its local data: `/etc/hosts`, `address=` lines, a local zone). A D given up
//! unanswered and never linked has no `stub_cache`.
//!
//! Not linked: names the stub asks that no pending D asked: a CNAME target it chases (the
//! row of D carries the whole chain in its answers), DNSSEC lookups (DS, DNSKEY), prefetches
//! and cache refreshes; those stay the stub's own rows. A stub on a non-loopback address of
//! the host is not linked; nor is a D whose client and stub are both gone (or have both moved
//! to other namespaces), with no namesake of the stub left there, before U is seen: no process
//! shows D's namespace's table.
//!
//! Memory: one candidate per pending loopback query (bounded by `--max-pending`), removed when
//! the query leaves the pairer; socket lookups are cached per (namespace, address) and per pid
//! for [`LOOKUP_TTL`] (a found owner for [`OWNER_TTL`]), so a busy stub costs a `/proc` read at
//! most every few seconds per listening address; the scan of `/proc/*/comm` for an exited P's
//! namesakes is cached per (name, namespace) for [`LOOKUP_TTL`].

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dnsledger_schema::{Requester, stub_cache};

use crate::decode::{Flow, Transport};

/// How long a socket table or a process's socket list read from `/proc` is reused, and how
/// long "P does not own that socket" is believed.
pub const LOOKUP_TTL: Duration = Duration::from_secs(2);
/// How long "P owns the socket bound to that address" is believed.
pub const OWNER_TTL: Duration = Duration::from_secs(30);
/// Entries of each cache at most (cleared whole beyond it: the caches only save `/proc` reads).
const CACHE_MAX: usize = 4096;

/// A DNS server's address as a client addressed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    pub transport: Transport,
    pub ip: IpAddr,
    pub port: u16,
}

/// Does process `pid` (named `comm`) own the socket bound to `server`? `view_pid` is a
/// process in the network namespace the address was used in (the downstream client), `netns`
/// that namespace's inode (a cache key). The seam between the linking rule and `/proc`.
pub trait SocketOwners {
    fn owns(&mut self, pid: u32, comm: &str, server: ServerAddr, view_pid: u32, netns: u32)
    -> bool;
}

/// A downstream query to a loopback address, waiting in the pairer.
#[derive(Debug)]
struct Candidate {
    seq: u64,
    server: ServerAddr,
    netns: u32,
    requester: Requester,
    /// An upstream query was linked to it.
    linked: bool,
}

/// A query of a known stub process, waiting in the pairer: a later downstream query of the
/// same question may still join it (coalesced).
#[derive(Debug)]
struct Upstream {
    seq: u64,
    pid: u32,
    comm: String,
    requesters: Vec<Requester>,
}

/// What the pairer keeps with a query for this module: the sequence numbers it is known by.
#[derive(Debug, Default)]
pub struct SideLink {
    /// A downstream query to a loopback address (a candidate).
    pub candidate: Option<u64>,
    /// A query of a known stub process (a possible upstream query).
    pub upstream: Option<u64>,
}

/// The facts of one query the linker looks at.
pub struct QueryFacts<'a> {
    pub seq: u64,
    pub flow: &'a Flow,
    pub pid: u32,
    pub netns: u32,
    pub comm: String,
    pub exe: Option<Arc<str>>,
    pub qname: Option<&'a str>,
    pub qtype: Option<u16>,
}

type Question = (Arc<str>, u16);

/// Links stub resolvers' upstream queries to their local requesters (see the module doc).
pub struct StubLinker<S = ProcSockets> {
    owners: S,
    /// Pending downstream queries by question.
    cands: HashMap<Question, Vec<Candidate>>,
    /// Pending queries of known stubs by question.
    ups: HashMap<Question, Vec<Upstream>>,
    /// Sequence number -> question, for both maps.
    by_seq: HashMap<u64, Question>,
    /// Processes seen serving a local client (their later queries may be joined).
    stubs: HashSet<u32>,
    /// Upstream queries written with requesters, since start.
    linked: u64,
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

fn add_requester(list: &mut Vec<Requester>, r: &Requester) {
    if !list.iter().any(|x| x.pid == r.pid) {
        list.push(r.clone());
    }
}

impl<S: SocketOwners> StubLinker<S> {
    pub fn new(owners: S) -> Self {
        Self {
            owners,
            cands: HashMap::new(),
            ups: HashMap::new(),
            by_seq: HashMap::new(),
            stubs: HashSet::new(),
            linked: 0,
        }
    }

    /// Upstream queries written with requesters since start.
    pub fn linked(&self) -> u64 {
        self.linked
    }

    /// A query entered the pairer: links it to the pending downstream queries it serves
    /// (it is their upstream query), and, when it went to a loopback address, to the pending
    /// queries of the stub listening there (it is their downstream query).
    pub fn on_query(&mut self, mut q: QueryFacts<'_>) -> SideLink {
        let (Some(qname), Some(qtype)) = (q.qname, q.qtype) else {
            return SideLink::default();
        };
        // A host without a local stub pays these compares per query, nothing more.
        if self.cands.is_empty() && !self.stubs.contains(&q.pid) && !is_loopback(q.flow.server_ip) {
            return SideLink::default();
        }
        let key: Question = (Arc::from(qname), qtype);
        let mut link = SideLink::default();

        // As an upstream query: the downstream queries pending now.
        let mut reqs: Vec<Requester> = Vec::new();
        if let Some(cands) = self.cands.get_mut(&key) {
            for c in cands.iter_mut() {
                if c.requester.pid != q.pid
                    && self
                        .owners
                        .owns(q.pid, &q.comm, c.server, c.requester.pid, c.netns)
                {
                    c.linked = true;
                    add_requester(&mut reqs, &c.requester);
                }
            }
        }
        if !reqs.is_empty() {
            if self.stubs.len() >= CACHE_MAX {
                self.stubs.clear();
            }
            self.stubs.insert(q.pid);
        }
        if self.stubs.contains(&q.pid) {
            self.ups.entry(key.clone()).or_default().push(Upstream {
                seq: q.seq,
                pid: q.pid,
                // The name is needed below only for a query to a loopback address.
                comm: if is_loopback(q.flow.server_ip) {
                    q.comm.clone()
                } else {
                    std::mem::take(&mut q.comm)
                },
                requesters: reqs,
            });
            link.upstream = Some(q.seq);
        }

        // As a downstream query: the stub's upstream queries still pending (coalesced).
        if is_loopback(q.flow.server_ip) {
            let server = ServerAddr {
                transport: q.flow.transport,
                ip: q.flow.server_ip,
                port: q.flow.server_port,
            };
            let requester = Requester {
                pid: q.pid,
                comm: q.comm,
                exe: q.exe,
            };
            let mut linked = false;
            if let Some(ups) = self.ups.get_mut(&key) {
                for u in ups.iter_mut() {
                    if u.pid != q.pid
                        && u.seq != q.seq
                        && self.owners.owns(u.pid, &u.comm, server, q.pid, q.netns)
                    {
                        linked = true;
                        add_requester(&mut u.requesters, &requester);
                    }
                }
            }
            self.cands.entry(key.clone()).or_default().push(Candidate {
                seq: q.seq,
                server,
                netns: q.netns,
                requester,
                linked,
            });
            link.candidate = Some(q.seq);
        }
        if link.candidate.is_some() || link.upstream.is_some() {
            self.by_seq.insert(q.seq, key);
        }
        link
    }

    /// A query left the pairer (`answered` or not): its `requester_*` list (as an upstream
    /// query) and its `stub_cache` value (as a downstream one).
    pub fn settle(
        &mut self,
        link: &SideLink,
        answered: bool,
    ) -> (Option<Vec<Requester>>, Option<&'static str>) {
        let Some(seq) = link.candidate.or(link.upstream) else {
            return (None, None);
        };
        let Some(key) = self.by_seq.remove(&seq) else {
            return (None, None);
        };
        let mut requesters = None;
        if link.upstream.is_some()
            && let Some(ups) = self.ups.get_mut(&key)
            && let Some(i) = ups.iter().position(|u| u.seq == seq)
        {
            let u = ups.swap_remove(i);
            if ups.is_empty() {
                self.ups.remove(&key);
            }
            if !u.requesters.is_empty() {
                self.linked += 1;
                requesters = Some(u.requesters);
            }
        }
        let mut cache = None;
        if link.candidate.is_some()
            && let Some(cands) = self.cands.get_mut(&key)
            && let Some(i) = cands.iter().position(|c| c.seq == seq)
        {
            let c = cands.swap_remove(i);
            if cands.is_empty() {
                self.cands.remove(&key);
            }
            cache = if c.linked {
                Some(stub_cache::MISS)
            } else if answered {
                Some(stub_cache::HIT)
            } else {
                None
            };
        }
        (requesters, cache)
    }

    /// Forgets every pending query (the pairer flushed).
    pub fn clear(&mut self) {
        self.cands.clear();
        self.ups.clear();
        self.by_seq.clear();
    }
}

/// [`SocketOwners`] from `/proc`: the socket tables of the client's network namespace and the
/// stub's file descriptors, cached (see the module doc).
pub struct ProcSockets {
    proc_root: PathBuf,
    /// (netns, server) -> inodes of the sockets bound there, when read.
    bound: HashMap<(u32, ServerAddr), (Vec<u64>, Instant)>,
    /// pid -> inodes of its sockets, when read.
    fds: HashMap<u32, (HashSet<u64>, Instant)>,
    /// (pid, netns, server) -> owns, when decided.
    decided: HashMap<(u32, u32, ServerAddr), (bool, Instant)>,
    /// (comm, netns) -> live processes of that name in that namespace, when listed.
    namesakes: HashMap<(String, u32), (Vec<u32>, Instant)>,
}

impl Default for ProcSockets {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcSockets {
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            bound: HashMap::new(),
            fds: HashMap::new(),
            decided: HashMap::new(),
            namesakes: HashMap::new(),
        }
    }

    /// Live processes named `comm` in network namespace `netns` (a scan of `/proc`, cached
    /// [`LOOKUP_TTL`]).
    fn namesakes(&mut self, comm: &str, netns: u32) -> Vec<u32> {
        let now = Instant::now();
        let key = (comm.to_string(), netns);
        if let Some((pids, at)) = self.namesakes.get(&key)
            && now.duration_since(*at) < LOOKUP_TTL
        {
            return pids.clone();
        }
        let mut pids = Vec::new();
        if let Ok(dir) = std::fs::read_dir(&self.proc_root) {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let named = std::fs::read_to_string(entry.path().join("comm"))
                    .is_ok_and(|c| c.trim_end_matches('\n') == comm);
                if named && self.netns_of(pid) == Some(netns) {
                    pids.push(pid);
                }
            }
        }
        if self.namesakes.len() >= CACHE_MAX {
            self.namesakes.clear();
        }
        self.namesakes.insert(key, (pids.clone(), now));
        pids
    }

    /// The inode of `pid`'s network namespace (the `netns` column: the kernel's 32-bit
    /// `ns.inum`), read from `/proc/PID/ns/net` (`net:[4026531840]`); `None` when gone.
    fn netns_of(&self, pid: u32) -> Option<u32> {
        let link = std::fs::read_link(self.proc_root.join(format!("{pid}/ns/net"))).ok()?;
        link.to_str()?
            .strip_prefix("net:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    }

    /// Inodes of the sockets bound to `server` in network namespace `netns`, read through the
    /// first of `readers` that is in it now (the client, else the stub: the client may have
    /// exited). `None` when none is (gone, or in other namespaces): another namespace's table
    /// may have a socket on the same address and port, so no table is read.
    fn bound_inodes(
        &mut self,
        server: ServerAddr,
        readers: &[u32],
        netns: u32,
    ) -> Option<Vec<u64>> {
        let now = Instant::now();
        if let Some((inodes, at)) = self.bound.get(&(netns, server))
            && now.duration_since(*at) < LOOKUP_TTL
        {
            return Some(inodes.clone());
        }
        let (v4, v6, listen_only) = match server.transport {
            Transport::Udp => ("udp", "udp6", false),
            Transport::Tcp => ("tcp", "tcp6", true),
        };
        let reader = readers
            .iter()
            .copied()
            .find(|&p| self.netns_of(p) == Some(netns))?;
        let mut inodes = Vec::new();
        for table in [v4, v6] {
            if let Ok(text) =
                std::fs::read_to_string(self.proc_root.join(format!("{reader}/net/{table}")))
            {
                inodes.extend(parse_socket_table(
                    &text,
                    server.ip,
                    server.port,
                    listen_only,
                ));
            }
        }
        if self.bound.len() >= CACHE_MAX {
            self.bound.clear();
        }
        self.bound.insert((netns, server), (inodes.clone(), now));
        Some(inodes)
    }

    /// Does `pid` hold one of `inodes` open?
    fn holds(&mut self, pid: u32, inodes: &[u64]) -> bool {
        let now = Instant::now();
        let fresh = self
            .fds
            .get(&pid)
            .is_some_and(|(_, at)| now.duration_since(*at) < LOOKUP_TTL);
        if !fresh {
            let set = socket_inodes(&self.proc_root.join(format!("{pid}/fd")));
            if self.fds.len() >= CACHE_MAX {
                self.fds.clear();
            }
            self.fds.insert(pid, (set, now));
        }
        self.fds
            .get(&pid)
            .is_some_and(|(set, _)| inodes.iter().any(|i| set.contains(i)))
    }
}

impl SocketOwners for ProcSockets {
    fn owns(
        &mut self,
        pid: u32,
        comm: &str,
        server: ServerAddr,
        view_pid: u32,
        netns: u32,
    ) -> bool {
        let now = Instant::now();
        if let Some((owns, at)) = self.decided.get(&(pid, netns, server)) {
            let ttl = if *owns { OWNER_TTL } else { LOOKUP_TTL };
            if now.duration_since(*at) < ttl {
                return *owns;
            }
        }
        let owns = if self.proc_root.join(pid.to_string()).exists() {
            self.bound_inodes(server, &[view_pid, pid], netns)
                .is_some_and(|inodes| !inodes.is_empty() && self.holds(pid, &inodes))
        } else {
            // P has exited before the recorder looked (it reads the ring buffer every 50 ms):
            // a worker a server forks per connection (dnsmasq's TCP children) holds the
            // listening socket it inherited only while it serves. Its namesake in the same
            // namespace that holds the socket now (the server it was forked from) stands in.
            let peers = self.namesakes(comm, netns);
            let mut readers = vec![view_pid];
            readers.extend(&peers);
            self.bound_inodes(server, &readers, netns)
                .is_some_and(|inodes| {
                    !inodes.is_empty() && peers.iter().any(|&q| self.holds(q, &inodes))
                })
        };
        if self.decided.len() >= CACHE_MAX {
            self.decided.clear();
        }
        self.decided.insert((pid, netns, server), (owns, now));
        owns
    }
}

/// Inodes of the sockets a process holds open (`socket:[N]` links under `/proc/PID/fd`); empty
/// when the process is gone or unreadable.
fn socket_inodes(fd_dir: &std::path::Path) -> HashSet<u64> {
    let mut set = HashSet::new();
    let Ok(dir) = std::fs::read_dir(fd_dir) else {
        return set;
    };
    for entry in dir.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path())
            && let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        {
            set.insert(inode);
        }
    }
    set
}

/// The address of a `/proc/net/{udp,tcp}{,6}` `local_address` field (`0100007F:0035`): the
/// kernel prints each 32-bit word of the address in host byte order.
fn parse_local(field: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let ip = match addr.len() {
        8 => IpAddr::from(word(0)?),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::from(b)
        }
        _ => return None,
    };
    Some((ip, port))
}

/// Does a socket bound to `bound` receive what a client sends to `dest`? The same address, or
/// a wildcard of its family (an IPv6 wildcard also takes IPv4, unless `IPV6_V6ONLY`, which the
/// table does not show).
fn bound_matches(bound: IpAddr, dest: IpAddr) -> bool {
    let dest = match dest {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(dest, IpAddr::V4),
        v4 => v4,
    };
    if bound == dest || bound.is_unspecified() && bound.is_ipv4() == dest.is_ipv4() {
        return true;
    }
    match bound {
        IpAddr::V6(b) if b.is_unspecified() => true,
        IpAddr::V6(b) => b.to_ipv4_mapped().is_some_and(|m| IpAddr::V4(m) == dest),
        IpAddr::V4(_) => false,
    }
}

/// Inodes of the sockets of one `/proc/net` table bound to `ip`:`port` (TCP: listening only).
fn parse_socket_table(text: &str, ip: IpAddr, port: u16, listen_only: bool) -> Vec<u64> {
    const TCP_LISTEN: &str = "0A";
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
            continue;
        };
        if listen_only && *state != TCP_LISTEN {
            continue;
        }
        let Some((bound, bport)) = parse_local(local) else {
            continue;
        };
        if bport == port
            && bound_matches(bound, ip)
            && let Ok(inode) = inode.parse::<u64>()
            && inode != 0
        {
            out.push(inode);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Owners by table: (stub pid, server) pairs.
    struct Table(Vec<(u32, ServerAddr)>);

    impl SocketOwners for Table {
        fn owns(&mut self, pid: u32, _: &str, s: ServerAddr, _: u32, _: u32) -> bool {
            self.0.contains(&(pid, s))
        }
    }

    fn flow(server: [u8; 4], port: u16) -> Flow {
        Flow {
            transport: Transport::Udp,
            client_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            client_port: 40000,
            server_ip: IpAddr::V4(Ipv4Addr::from(server)),
            server_port: port,
            sock_cookie: 1,
            side: crate::capture::Side::Client,
        }
    }

    fn facts<'a>(seq: u64, flow: &'a Flow, pid: u32, name: &'a str) -> QueryFacts<'a> {
        QueryFacts {
            seq,
            flow,
            pid,
            netns: 1,
            comm: format!("p{pid}"),
            exe: Some(format!("/bin/p{pid}").into()),
            qname: Some(name),
            qtype: Some(1),
        }
    }

    const STUB: [u8; 4] = [127, 0, 0, 53];

    fn stub_addr() -> ServerAddr {
        ServerAddr {
            transport: Transport::Udp,
            ip: IpAddr::V4(Ipv4Addr::from(STUB)),
            port: 53,
        }
    }

    fn pids(link: &SideLink, l: &mut StubLinker<Table>) -> Vec<u32> {
        let (r, _) = l.settle(link, true);
        r.unwrap_or_default().iter().map(|r| r.pid).collect()
    }

    #[test]
    fn coalesced_parallel_and_unrelated() {
        let mut l = StubLinker::new(Table(vec![(9, stub_addr())]));
        let down = flow(STUB, 53);
        let up = flow([192, 0, 2, 1], 53);
        // Two apps ask the stub the same name; one asks it twice (one requester entry).
        let d1 = l.on_query(facts(1, &down, 100, "a.test"));
        assert_eq!(d1.candidate, Some(1));
        let d2 = l.on_query(facts(2, &down, 101, "a.test"));
        let d3 = l.on_query(facts(3, &down, 101, "a.test"));
        // An unrelated process asks the same name upstream at the same moment: no link.
        let other = l.on_query(facts(4, &up, 77, "a.test"));
        assert_eq!(other.upstream, None);
        // The stub asks two upstreams in parallel: each names both apps.
        let u5 = l.on_query(facts(5, &up, 9, "a.test"));
        let u6 = l.on_query(facts(6, &up, 9, "a.test"));
        // A third app asks while the upstream queries are pending: coalesced, named too.
        let d7 = l.on_query(facts(7, &down, 102, "a.test"));
        // Another name is not linked.
        let u8 = l.on_query(facts(8, &up, 9, "b.test"));
        assert_eq!(pids(&u5, &mut l), [100, 101, 102]);
        assert_eq!(pids(&u6, &mut l), [100, 101, 102]);
        assert!(pids(&u8, &mut l).is_empty());
        assert_eq!(l.linked(), 2);
        assert_eq!(l.settle(&d1, true).1, Some(stub_cache::MISS));
        assert_eq!(l.settle(&d2, true).1, Some(stub_cache::MISS));
        assert_eq!(l.settle(&d3, false).1, Some(stub_cache::MISS));
        assert_eq!(l.settle(&d7, true).1, Some(stub_cache::MISS));
        assert_eq!(l.settle(&other, true), (None, None));
        // Settled queries are no longer in the window.
        let u9 = l.on_query(facts(9, &up, 9, "a.test"));
        assert!(pids(&u9, &mut l).is_empty());
        assert!(l.cands.is_empty() && l.ups.is_empty() && l.by_seq.is_empty());
    }

    #[test]
    fn hit_when_no_upstream_in_the_window() {
        let mut l = StubLinker::new(Table(vec![(9, stub_addr())]));
        let down = flow(STUB, 53);
        let d1 = l.on_query(facts(1, &down, 100, "a.test"));
        let d2 = l.on_query(facts(2, &down, 100, "c.test"));
        assert_eq!(l.settle(&d1, true), (None, Some(stub_cache::HIT)));
        // Unanswered and never linked: nothing is known.
        assert_eq!(l.settle(&d2, false), (None, None));
        // A query after D was answered is not linked to it.
        let u3 = l.on_query(facts(3, &flow([192, 0, 2, 1], 53), 9, "a.test"));
        assert!(pids(&u3, &mut l).is_empty());
        // A stub asking another loopback stub is itself a downstream query.
        let d4 = l.on_query(facts(4, &down, 100, "d.test"));
        let u5 = l.on_query(facts(5, &flow([127, 0, 0, 54], 53), 9, "d.test"));
        assert_eq!(u5.candidate, Some(5));
        assert_eq!(
            l.settle(&u5, true),
            (
                Some(vec![Requester {
                    pid: 100,
                    comm: "p100".into(),
                    exe: Some("/bin/p100".into()),
                }]),
                Some(stub_cache::HIT)
            )
        );
        assert_eq!(l.settle(&d4, true).1, Some(stub_cache::MISS));
    }

    #[test]
    fn proc_tables_parse() {
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          1: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0 0\n\
          2: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0 0\n\
          3: 3600007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4444 2 0 0\n";
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        assert_eq!(
            parse_socket_table(udp, v4(127, 0, 0, 53), 53, false),
            [4242, 4343]
        );
        assert_eq!(parse_socket_table(udp, v4(127, 0, 0, 9), 53, false), [4343]);
        assert!(parse_socket_table(udp, v4(127, 0, 0, 53), 5353, false).is_empty());
        // TCP: only listening sockets.
        assert!(parse_socket_table(udp, v4(127, 0, 0, 53), 53, true).is_empty());
        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
          0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5151 2 0\n";
        let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(parse_socket_table(udp6, lo6, 53, false), [5151]);
        assert!(parse_socket_table(udp6, v4(127, 0, 0, 1), 53, false).is_empty());
        assert_eq!(
            parse_local("00000000000000000000000000000000:0035"),
            Some((IpAddr::V6(Ipv6Addr::UNSPECIFIED), 53))
        );
        assert!(bound_matches(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            v4(127, 0, 0, 1)
        ));
    }

    #[test]
    fn proc_sockets_find_this_process_socket() {
        // A real socket of this test process, found through this machine's /proc.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = sock.local_addr().expect("addr").port();
        let server = ServerAddr {
            transport: Transport::Udp,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
        };
        let me = std::process::id();
        let mut p = ProcSockets::default();
        let netns = p.netns_of(me).expect("this process's network namespace");
        let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
        let comm = comm.trim_end();
        assert!(p.owns(me, comm, server, me, netns));
        // Pid 1 does not hold this socket.
        assert!(!ProcSockets::default().owns(1, "init", server, me, netns));
        // Asked about another namespace (the same address and port may be bound there), no
        // process in it to read its table through: not this socket.
        let other = netns.wrapping_add(1);
        assert!(!ProcSockets::default().owns(me, comm, server, me, other));
        // A client gone: the table is read through the stub, when it is in that namespace.
        let gone = u32::MAX;
        assert!(ProcSockets::default().owns(me, comm, server, gone, netns));
        // The asking process gone too (a server's per-connection worker): a live process of
        // its name in that namespace that holds the socket stands in; another name does not.
        assert!(ProcSockets::default().owns(gone - 1, comm, server, gone, netns));
        assert!(!ProcSockets::default().owns(gone - 1, "no-such-comm", server, gone, netns));
    }
}
