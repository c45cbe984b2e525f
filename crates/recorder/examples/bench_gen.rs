//! Benchmark data generator (bench/ P5): realistic DNS transactions written as segments through
//! the recorder's real path — DNS wire messages built with hickory-proto, parsed and paired by
//! [`dnsledger::pair::Pairer`], written by [`dnsledger::store::segment::SegmentWriter`].
//!
//! ```sh
//! cargo build --release -p dnsledger-recorder --example bench_gen
//! target/release/examples/bench_gen --rows 5000000 --hosts 16 --days 7 --seed 1 --out /tmp/gen
//! ```
//!
//! Deterministic for given arguments (same rows, same file names; the thread count does not
//! matter: each host has its own random stream). Hosts run in parallel (`--threads`).
//! Distributions: names are Zipf-distributed over tens of thousands of names under thousands of
//! registered domains; every host runs dozens of processes (some short-lived, re-spawned with
//! new pids; some in containers); ~5% NXDOMAIN (typos, search-domain misses and a DGA-like
//! burst on one host); one host carries a TXT tunnel and another a slow one, for `exfil`;
//! answers have CNAME chains, several addresses, TXT records and SOA on negative answers.
//! With `--pcap FILE` the same transactions are also written as a pcap (raw IP, UDP) for tools
//! that read captures.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use dnsledger::capture::KernelOwner;
use dnsledger::decode::{DnsMessage, Flow, Transport};
use dnsledger::pair::{Attributor, PairConfig, Pairer, ProcessAttrs};
use dnsledger::store::segment::{SegmentConfig, SegmentWriter};
use dnsledger_schema::Transaction;
use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Bumped whenever the output for the same arguments changes (cache key of bench/).
const GENERATOR_VERSION: u32 = 4;
/// The generated week ends here: 2026-11-01T00:00:00Z.
const END_NS: i64 = 1_793_491_200 * 1_000_000_000;
const NS_PER_DAY: i64 = 86_400_000_000_000;

#[derive(Parser, Debug)]
#[command(about = "Generate realistic dnsledger segments for benchmarks")]
struct Args {
    /// Transactions in total (split over the hosts).
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    #[arg(long, default_value_t = 16)]
    hosts: u32,
    /// Days of time covered, ending 2026-11-01T00:00Z.
    #[arg(long, default_value_t = 7)]
    days: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Data directory to write (`<out>/segments/host=...`).
    #[arg(long)]
    out: PathBuf,
    /// Distinct names queried (besides tunnels, DGA and typos).
    #[arg(long, default_value_t = 40_000)]
    names: usize,
    /// Leave `query_raw`/`response_raw` empty.
    #[arg(long)]
    no_raw: bool,
    /// Also write the transactions as a pcap (raw IP link type) to this file.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Worker threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Seal segments every this many seconds of data time, as the recorder's `--rotate-age`
    /// does in wall time (its default is 300), with a random phase per host so that
    /// rotations do not line up with the hour partitions (the recorder starts at any time).
    /// Default 300: the recorder's default, so a generated set has the files a live fleet
    /// leaves (per-file costs dominate small queries). 0: one segment per host and hour.
    #[arg(long, default_value_t = 300)]
    segment_secs: u64,
    /// Write the data as compaction leaves it: one segment per host and hour, its rows sorted
    /// by (registered_domain, qname, ts) (overrides --segment-secs).
    #[arg(long)]
    compacted: bool,
    /// The data ends at this Unix time in seconds (default 2026-11-01T00:00:00Z).
    #[arg(long, default_value_t = END_NS / 1_000_000_000)]
    end: i64,
}

/// splitmix64: small, fast, deterministic; plenty for synthetic traffic.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut r = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
}

/// Cumulative weights 1/rank^s, for sampling ranks by binary search.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let cdf = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        Zipf(cdf)
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let total = *self.0.last().unwrap_or(&1.0);
        let x = rng.f64() * total;
        self.0.partition_point(|&c| c < x).min(self.0.len() - 1)
    }
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ra", "to", "vi", "zu", "an", "el", "or", "us", "bri", "con", "dex",
    "fin", "gal", "hub", "ion", "jet", "kin", "lum", "max", "nov", "opt", "pix", "qu", "ret",
    "sol", "tek", "uni", "vox", "web", "xel", "yo", "zen", "cloud", "data", "net", "soft", "sys",
    "ware", "shop", "news", "bank", "play", "mail", "cast", "stream", "labs",
];
const TLDS: &[(&str, u32)] = &[
    ("com", 50),
    ("net", 10),
    ("org", 7),
    ("io", 5),
    ("de", 4),
    ("co.uk", 3),
    ("fr", 2),
    ("ru", 2),
    ("jp", 2),
    ("com.au", 1),
    ("info", 1),
    ("dev", 1),
    ("app", 1),
    ("cloud", 1),
    ("cn", 2),
    ("com.br", 1),
    ("nl", 1),
    ("eu", 1),
];
const SUBS: &[&str] = &[
    "www",
    "api",
    "cdn",
    "static",
    "img",
    "mail",
    "login",
    "auth",
    "m",
    "app",
    "ws",
    "telemetry",
    "update",
    "s3",
    "edge",
    "assets",
    "video",
    "accounts",
    "graph",
    "metrics",
    "push",
    "sync",
    "files",
    "docs",
    "status",
    "gateway",
    "events",
    "config",
    "dl",
    "mirror",
];

/// A name that exists (or not), and what its answers look like.
struct NameInfo {
    name: String,
    /// Number of CNAMEs before the addresses (0..=2).
    cnames: u8,
    /// Addresses per answer (1..=4).
    addrs: u8,
    ttl: u32,
    exists: bool,
}

fn word(rng: &mut Rng, parts: u64) -> String {
    (0..parts).map(|_| *rng.pick(SYLLABLES)).collect()
}

fn tld(rng: &mut Rng) -> &'static str {
    let total: u32 = TLDS.iter().map(|t| t.1).sum();
    let mut x = rng.below(total as u64) as u32;
    for (t, w) in TLDS {
        if x < *w {
            return t;
        }
        x -= w;
    }
    "com"
}

/// Names, most popular first (Zipf rank = index).
fn universe(seed: u64, n: usize) -> Vec<NameInfo> {
    let mut rng = Rng::new(seed ^ 0xD0_4A11);
    let domains: Vec<String> = (0..(n / 5).max(10))
        .map(|i| {
            format!(
                "{}{}.{}",
                {
                    let parts = 2 + rng.below(2);
                    word(&mut rng, parts)
                },
                i % 97,
                tld(&mut rng)
            )
        })
        .collect();
    let mut names = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    while names.len() < n {
        // Popular domains get more names: pick domains Zipf-like by squaring a uniform.
        let d = &domains[((rng.f64().powi(2)) * domains.len() as f64) as usize];
        let name = match rng.below(10) {
            0 => d.clone(),
            1 => format!("{}{}.{}.{d}", rng.pick(SUBS), rng.below(40), rng.pick(SUBS)),
            _ => format!("{}.{d}", rng.pick(SUBS)),
        };
        if !seen.insert(name.clone()) {
            continue;
        }
        names.push(NameInfo {
            name,
            cnames: [0, 0, 0, 1, 1, 2][rng.below(6) as usize],
            addrs: 1 + rng.below(4) as u8,
            ttl: *rng.pick(&[30, 60, 60, 120, 300, 300, 300, 600, 3600, 86400]),
            exists: true,
        });
    }
    names
}

/// Names that do not exist: search-domain suffixes, typos, stale hosts.
fn nx_universe(seed: u64, n: usize) -> Vec<NameInfo> {
    let mut rng = Rng::new(seed ^ 0x4E58);
    (0..n)
        .map(|i| {
            let name = match rng.below(4) {
                0 => format!("wpad.corp{}.internal", i % 7),
                1 => format!("{}.{}.svc.cluster.local.corp.example", word(&mut rng, 2), i),
                2 => format!("{}{}.{}", word(&mut rng, 3), i, tld(&mut rng)),
                _ => format!("_ldap._tcp.dc{}.corp{}.internal", i, i % 5),
            };
            NameInfo {
                name,
                cnames: 0,
                addrs: 0,
                ttl: 900,
                exists: false,
            }
        })
        .collect()
}

struct ProcTemplate {
    comm: &'static str,
    exe: &'static str,
    cmdline: &'static str,
    uid: u32,
    /// Re-spawned with a new pid every hour with this probability.
    churn: f64,
    weight: f64,
}

const PROCS: &[ProcTemplate] = &[
    ProcTemplate {
        comm: "systemd-resolve",
        exe: "/usr/lib/systemd/systemd-resolved",
        cmdline: "/lib/systemd/systemd-resolved",
        uid: 101,
        churn: 0.0,
        weight: 5.0,
    },
    ProcTemplate {
        comm: "firefox",
        exe: "/usr/lib/firefox/firefox",
        cmdline: "/usr/lib/firefox/firefox",
        uid: 1000,
        churn: 0.01,
        weight: 20.0,
    },
    ProcTemplate {
        comm: "chrome",
        exe: "/opt/google/chrome/chrome",
        cmdline: "/opt/google/chrome/chrome --type=utility --utility-sub-type=network.mojom.NetworkService",
        uid: 1000,
        churn: 0.02,
        weight: 25.0,
    },
    ProcTemplate {
        comm: "curl",
        exe: "/usr/bin/curl",
        cmdline: "curl -fsSL https://example.com/install.sh",
        uid: 1000,
        churn: 0.9,
        weight: 3.0,
    },
    ProcTemplate {
        comm: "wget",
        exe: "/usr/bin/wget",
        cmdline: "wget -q https://mirror.example/file.tar.gz",
        uid: 0,
        churn: 0.9,
        weight: 1.0,
    },
    ProcTemplate {
        comm: "apt-get",
        exe: "/usr/bin/apt-get",
        cmdline: "apt-get update",
        uid: 0,
        churn: 0.9,
        weight: 1.0,
    },
    ProcTemplate {
        comm: "http",
        exe: "/usr/lib/apt/methods/http",
        cmdline: "/usr/lib/apt/methods/http",
        uid: 42,
        churn: 0.9,
        weight: 1.0,
    },
    ProcTemplate {
        comm: "python3",
        exe: "/usr/bin/python3.11",
        cmdline: "python3 /opt/app/worker.py --queue default",
        uid: 1001,
        churn: 0.2,
        weight: 6.0,
    },
    ProcTemplate {
        comm: "java",
        exe: "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
        cmdline: "java -Xmx2g -jar /opt/svc/service.jar",
        uid: 1002,
        churn: 0.01,
        weight: 8.0,
    },
    ProcTemplate {
        comm: "nginx",
        exe: "/usr/sbin/nginx",
        cmdline: "nginx: worker process",
        uid: 33,
        churn: 0.0,
        weight: 4.0,
    },
    ProcTemplate {
        comm: "node",
        exe: "/usr/bin/node",
        cmdline: "node /srv/api/server.js",
        uid: 1003,
        churn: 0.05,
        weight: 7.0,
    },
    ProcTemplate {
        comm: "postgres",
        exe: "/usr/lib/postgresql/15/bin/postgres",
        cmdline: "postgres: walsender",
        uid: 105,
        churn: 0.0,
        weight: 0.5,
    },
    ProcTemplate {
        comm: "sshd",
        exe: "/usr/sbin/sshd",
        cmdline: "sshd: /usr/sbin/sshd -D",
        uid: 0,
        churn: 0.3,
        weight: 1.0,
    },
    ProcTemplate {
        comm: "dockerd",
        exe: "/usr/bin/dockerd",
        cmdline: "/usr/bin/dockerd -H fd://",
        uid: 0,
        churn: 0.0,
        weight: 1.5,
    },
    ProcTemplate {
        comm: "kubelet",
        exe: "/usr/bin/kubelet",
        cmdline: "/usr/bin/kubelet --config=/var/lib/kubelet/config.yaml",
        uid: 0,
        churn: 0.0,
        weight: 3.0,
    },
    ProcTemplate {
        comm: "coredns",
        exe: "/coredns",
        cmdline: "/coredns -conf /etc/coredns/Corefile",
        uid: 65532,
        churn: 0.0,
        weight: 6.0,
    },
    ProcTemplate {
        comm: "envoy",
        exe: "/usr/local/bin/envoy",
        cmdline: "envoy -c /etc/envoy/envoy.yaml",
        uid: 101,
        churn: 0.01,
        weight: 6.0,
    },
    ProcTemplate {
        comm: "prometheus",
        exe: "/bin/prometheus",
        cmdline: "/bin/prometheus --config.file=/etc/prometheus/prometheus.yml",
        uid: 65534,
        churn: 0.0,
        weight: 2.0,
    },
    ProcTemplate {
        comm: "chronyd",
        exe: "/usr/sbin/chronyd",
        cmdline: "/usr/sbin/chronyd -F 1",
        uid: 0,
        churn: 0.0,
        weight: 0.3,
    },
    ProcTemplate {
        comm: "snapd",
        exe: "/usr/lib/snapd/snapd",
        cmdline: "/usr/lib/snapd/snapd",
        uid: 0,
        churn: 0.0,
        weight: 0.5,
    },
    ProcTemplate {
        comm: "git",
        exe: "/usr/bin/git",
        cmdline: "git fetch origin",
        uid: 1000,
        churn: 0.9,
        weight: 1.0,
    },
    ProcTemplate {
        comm: "ssh",
        exe: "/usr/bin/ssh",
        cmdline: "ssh deploy@build-7",
        uid: 1000,
        churn: 0.8,
        weight: 0.5,
    },
    ProcTemplate {
        comm: "slack",
        exe: "/usr/lib/slack/slack",
        cmdline: "/usr/lib/slack/slack --enable-crashpad",
        uid: 1000,
        churn: 0.01,
        weight: 4.0,
    },
    ProcTemplate {
        comm: "code",
        exe: "/usr/share/code/code",
        cmdline: "/usr/share/code/code --type=utility",
        uid: 1000,
        churn: 0.02,
        weight: 3.0,
    },
    ProcTemplate {
        comm: "cron",
        exe: "/usr/sbin/cron",
        cmdline: "/usr/sbin/cron -f",
        uid: 0,
        churn: 0.0,
        weight: 0.2,
    },
    ProcTemplate {
        comm: "php-fpm8.2",
        exe: "/usr/sbin/php-fpm8.2",
        cmdline: "php-fpm: pool www",
        uid: 33,
        churn: 0.1,
        weight: 3.0,
    },
    ProcTemplate {
        comm: "redis-server",
        exe: "/usr/bin/redis-server",
        cmdline: "/usr/bin/redis-server 127.0.0.1:6379",
        uid: 106,
        churn: 0.0,
        weight: 0.3,
    },
    ProcTemplate {
        comm: "gitlab-runner",
        exe: "/usr/bin/gitlab-runner",
        cmdline: "gitlab-runner run",
        uid: 999,
        churn: 0.0,
        weight: 1.5,
    },
];

/// The tunnelling client on the tunnel hosts, and the DGA-like malware.
const TUNNEL: ProcTemplate = ProcTemplate {
    comm: "sysupdate",
    exe: "/tmp/.cache/sysupdate",
    cmdline: "/tmp/.cache/sysupdate -d",
    uid: 1000,
    churn: 0.0,
    weight: 0.0,
};
const TUNNEL_DOMAIN: &str = "t.cdn-telemetry-sync.net";
const SLOW_TUNNEL_DOMAIN: &str = "ns2.metrics-beacon.org";
const DGA: ProcTemplate = ProcTemplate {
    comm: "kworkerd",
    exe: "/var/tmp/kworkerd",
    cmdline: "[kworkerd]",
    uid: 33,
    churn: 0.0,
    weight: 0.0,
};

struct Proc {
    tpl: &'static ProcTemplate,
    pid: u32,
    cgroup_id: u64,
    container: Option<Arc<str>>,
    attrs: ProcessAttrs,
    comm: [u8; 16],
}

fn make_proc(tpl: &'static ProcTemplate, rng: &mut Rng, host: u32) -> Proc {
    let pid = 1000 + rng.below(4_000_000) as u32;
    let in_container = matches!(
        tpl.comm,
        "node" | "java" | "python3" | "envoy" | "coredns" | "nginx" | "php-fpm8.2"
    ) && rng.chance(0.6);
    let container: Option<Arc<str>> =
        in_container.then(|| Arc::from(format!("{:016x}{:016x}", rng.next(), rng.next()).as_str()));
    let cgroup_path: Arc<str> = match &container {
        Some(id) => Arc::from(format!("/system.slice/docker-{id}.scope").as_str()),
        None if tpl.uid >= 1000 && tpl.uid < 1100 => Arc::from(
            format!(
                "/user.slice/user-{}.slice/session-{}.scope",
                tpl.uid,
                2 + host % 9
            )
            .as_str(),
        ),
        None => Arc::from(format!("/system.slice/{}.service", tpl.comm).as_str()),
    };
    let mut comm = [0u8; 16];
    let b = tpl.comm.as_bytes();
    comm[..b.len().min(15)].copy_from_slice(&b[..b.len().min(15)]);
    Proc {
        tpl,
        pid,
        cgroup_id: 4000 + rng.below(100_000),
        attrs: ProcessAttrs {
            ppid: Some(1 + rng.below(pid as u64) as u32),
            exe: Some(Arc::from(tpl.exe)),
            cmdline: Some(Arc::from(tpl.cmdline)),
            cgroup_path: Some(cgroup_path),
            container_id: container.clone(),
        },
        container,
        comm,
    }
}

/// Looks processes up by pid, as the live recorder's process table does.
#[derive(Default)]
struct GenAttr(HashMap<u32, ProcessAttrs>);

impl Attributor for GenAttr {
    fn attrs(&mut self, owner: &KernelOwner) -> ProcessAttrs {
        self.0.get(&owner.pid).cloned().unwrap_or_default()
    }
}

fn name(s: &str) -> Result<Name> {
    Name::from_str(&format!("{s}.")).with_context(|| format!("bad name {s}"))
}

fn edns() -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e
}

/// Deterministic addresses of a name (hash of name and index).
fn addr_seed(name: &str, i: u8) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain([i]) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Query and response wire messages (id 0; the caller patches the id).
fn build(
    info: &NameInfo,
    qtype: RecordType,
    rcode: ResponseCode,
    rng: &mut Rng,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let qn = name(&info.name)?;
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(qn.clone(), qtype));
    q.set_edns(edns());
    let mut r = Message::response(0, OpCode::Query);
    r.metadata.recursion_desired = true;
    r.metadata.recursion_available = true;
    r.metadata.response_code = rcode;
    r.add_query(Query::query(qn.clone(), qtype));
    r.set_edns(edns());
    let soa = |zone: &Name| -> Record {
        Record::from_rdata(
            zone.clone(),
            900,
            RData::SOA(SOA::new(
                Name::from_str("ns1.dns-host.net.").unwrap_or_else(|_| Name::root()),
                Name::from_str("hostmaster.dns-host.net.").unwrap_or_else(|_| Name::root()),
                2026110101,
                7200,
                3600,
                1_209_600,
                900,
            )),
        )
    };
    if rcode != ResponseCode::NoError {
        r.add_authority(soa(&qn.base_name()));
        return Ok((q.to_vec()?, r.to_vec()?));
    }
    let mut target = qn.clone();
    match qtype {
        RecordType::A | RecordType::AAAA => {
            for c in 0..info.cnames {
                let next = name(&format!(
                    "e{}.{}.edgekey-cdn.net",
                    addr_seed(&info.name, c) % 9000,
                    c
                ))?;
                r.add_answer(Record::from_rdata(
                    target.clone(),
                    info.ttl,
                    RData::CNAME(CNAME(next.clone())),
                ));
                target = next;
            }
            for i in 0..info.addrs {
                let h = addr_seed(&info.name, i + 10);
                let rdata = if qtype == RecordType::A {
                    RData::A(A(Ipv4Addr::from((h as u32) | 0x0100_0000)))
                } else {
                    RData::AAAA(AAAA(Ipv6Addr::from(((0x2600u128) << 112) | (h as u128))))
                };
                r.add_answer(Record::from_rdata(target.clone(), info.ttl.min(300), rdata));
            }
        }
        RecordType::MX => {
            for i in 0..info.addrs.min(3) {
                let mx = name(&format!("mx{i}.{}", info.name))?;
                r.add_answer(Record::from_rdata(
                    qn.clone(),
                    3600,
                    RData::MX(MX::new(10 * (i as u16 + 1), mx)),
                ));
            }
        }
        RecordType::TXT => {
            let mut strings = vec![format!("v=spf1 include:_spf.{} ~all", info.name)];
            if rng.chance(0.7) {
                let token: String = (0..43)
                    .map(|_| (b'a' + rng.below(26) as u8) as char)
                    .collect();
                strings.push(format!("google-site-verification={token}"));
            }
            for s in strings {
                r.add_answer(Record::from_rdata(
                    qn.clone(),
                    3600,
                    RData::TXT(TXT::new(vec![s])),
                ));
            }
        }
        _ => {
            // HTTPS and the rest: NODATA with the zone's SOA, as most domains answer.
            r.add_authority(soa(&qn.base_name()));
        }
    }
    Ok((q.to_vec()?, r.to_vec()?))
}

const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

fn tunnel_messages(rng: &mut Rng, domain: &str, label_len: usize) -> Result<(Vec<u8>, Vec<u8>)> {
    let payload: String = (0..label_len)
        .map(|_| B32[rng.below(32) as usize] as char)
        .collect();
    let (a, b) = payload.split_at(label_len.min(60) / 2 + 1);
    let info = NameInfo {
        name: format!("{a}.{b}.{domain}"),
        cnames: 0,
        addrs: 0,
        ttl: 0,
        exists: true,
    };
    let qn = name(&info.name)?;
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(qn.clone(), RecordType::TXT));
    let mut r = Message::response(0, OpCode::Query);
    r.metadata.recursion_desired = true;
    r.metadata.recursion_available = true;
    r.add_query(Query::query(qn.clone(), RecordType::TXT));
    let data: String = (0..180)
        .map(|_| B32[rng.below(32) as usize] as char)
        .collect();
    r.add_answer(Record::from_rdata(qn, 0, RData::TXT(TXT::new(vec![data]))));
    Ok((q.to_vec()?, r.to_vec()?))
}

struct Shared {
    names: Vec<NameInfo>,
    nx: Vec<NameInfo>,
    zipf: Zipf,
    nx_zipf: Zipf,
    rows_per_host: Vec<u64>,
    days: u32,
    keep_raw: bool,
    out: PathBuf,
    seed: u64,
    /// Rotation period in ns (0: per hour only).
    segment_ns: i64,
    compacted: bool,
    end_ns: i64,
}

/// Per-host summary printed at the end.
struct HostOut {
    rows: u64,
    sealed: usize,
    pcap: Vec<(i64, Vec<u8>)>,
}

fn set_id(b: &mut [u8], id: u16) {
    b[..2].copy_from_slice(&id.to_be_bytes());
}

/// IPv4/UDP or IPv6/UDP packet around a DNS message (checksums left zero where allowed).
fn ip_packet(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, dns: &[u8]) -> Vec<u8> {
    let ulen = (8 + dns.len()) as u16;
    let mut p = Vec::with_capacity(48 + dns.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + ulen;
            p.extend_from_slice(&[
                0x45,
                0,
                (total >> 8) as u8,
                total as u8,
                0,
                0,
                0x40,
                0,
                64,
                17,
                0,
                0,
            ]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let mut sum: u32 = 0;
            for c in p[..20].chunks(2) {
                sum += u16::from_be_bytes([c[0], c[1]]) as u32;
            }
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            let ck = !(sum as u16);
            p[10..12].copy_from_slice(&ck.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&[0x60, 0, 0, 0, (ulen >> 8) as u8, ulen as u8, 17, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        _ => unreachable!("one address family per flow"),
    }
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&ulen.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(dns);
    p
}

fn run_host(sh: &Shared, host: u32, want_pcap: bool) -> Result<HostOut> {
    let mut rng = Rng::new(sh.seed.wrapping_mul(1_000_003).wrapping_add(host as u64));
    let hostname = format!("host-{host:03}");
    let host_ip = IpAddr::V4(Ipv4Addr::new(
        10,
        20,
        (host / 250) as u8,
        (host % 250 + 2) as u8,
    ));
    let host_ip6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, host as u16 + 2));
    let resolvers = [
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53)),
        IpAddr::V4(Ipv4Addr::new(10, 20, 0, 1)),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 1)),
    ];
    let tunnel_host = host == 3 % sh.rows_per_host.len() as u32;
    let slow_tunnel_host = host == 7 % sh.rows_per_host.len() as u32 && !tunnel_host;
    let dga_host = host == 5 % sh.rows_per_host.len() as u32;

    // Processes: each template on a host with probability ~0.7, 1-3 instances.
    let mut procs: Vec<Proc> = Vec::new();
    for tpl in PROCS {
        if rng.chance(0.7) || tpl.comm == "systemd-resolve" {
            for _ in 0..1 + rng.below(3) {
                procs.push(make_proc(tpl, &mut rng, host));
            }
        }
    }
    let mut weights: Vec<f64> = procs
        .iter()
        .map(|p| p.tpl.weight * (0.3 + rng.f64()))
        .collect();
    let tunnel_proc = make_proc(&TUNNEL, &mut rng, host);
    let dga_proc = make_proc(&DGA, &mut rng, host);
    let mut attr = GenAttr::default();
    for p in procs.iter().chain([&tunnel_proc, &dga_proc]) {
        attr.0.insert(p.pid, p.attrs.clone());
    }
    let mut cum: Vec<f64> = Vec::new();
    let rebuild = |weights: &Vec<f64>, cum: &mut Vec<f64>| {
        cum.clear();
        let mut a = 0.0;
        for w in weights {
            a += w;
            cum.push(a);
        }
    };
    rebuild(&weights, &mut cum);

    let rows = sh.rows_per_host[host as usize];
    let span = sh.days as i64 * NS_PER_DAY;
    let end_ns = sh.end_ns;
    let start = end_ns - span;
    let mean_gap = span as f64 / rows.max(1) as f64;

    let data_dir = sh.out.clone();
    let mut writer = SegmentWriter::open(SegmentConfig {
        data_dir,
        host: hostname.clone(),
        boot_id: Some(format!("{:08x}-0000-4000-8000-{:012x}", host, sh.seed)),
        kernel: "6.1.0-bench".into(),
        source: "bpf",
        rotate_size: 128 * 1024 * 1024,
        rotate_age: if sh.segment_ns > 0 {
            Duration::from_nanos(sh.segment_ns as u64)
        } else {
            Duration::from_secs(10 * 365 * 86400)
        },
        batch_rows: 8192,
        spool_sync: None,
        run_id: Some(format!("gen{GENERATOR_VERSION}s{}", sh.seed)),
        extra_meta: vec![(
            "dnsledger.bench_generator".into(),
            GENERATOR_VERSION.to_string(),
        )],
        min_free: 0,
        max_buffered_rows: usize::MAX / 2,
    })?;
    let mut pairer = Pairer::new(PairConfig {
        timeout_ns: 5_000_000_000,
        max_pending: dnsledger::config::DEFAULT_MAX_PENDING,
        keep_raw: sh.keep_raw,
        hostname: Arc::from(hostname.as_str()),
        boot_id: Some(Arc::from(
            format!("{:08x}-0000-4000-8000-{:012x}", host, sh.seed).as_str(),
        )),
    });
    let mut cache: HashMap<(u32, u16), (Vec<u8>, Vec<u8>)> = HashMap::new();
    let mut out_rows: Vec<Transaction> = Vec::with_capacity(64);
    let mut pcap = Vec::new();
    let mut ts = start as f64;
    let mut hour = start / 3_600_000_000_000;
    let mut sealed_paths: Vec<PathBuf> = Vec::new();
    let mut pushed = 0u64;
    // The writer's rotation clock follows data time: instant `base` is `start`.
    let base = Instant::now();
    let clock = |ts: i64| base + Duration::from_nanos((ts - start).max(0) as u64);
    // Rotation slots of `segment_ns` with a per-host phase (the recorder starts at any time).
    // From its own stream, so that the rows do not depend on the rotation.
    let phase = if sh.segment_ns > 0 {
        Rng::new(sh.seed ^ 0x5e67_0000 ^ u64::from(host)).below(sh.segment_ns as u64) as i64
    } else {
        0
    };
    let slot_of = |ts: i64| {
        if sh.segment_ns > 0 {
            (ts + phase).div_euclid(sh.segment_ns)
        } else {
            0
        }
    };
    let mut slot = slot_of(start);
    for i in 0..rows {
        // Diurnal load: busier in the (UTC) day.
        let t_of_day = ((ts as i64).rem_euclid(NS_PER_DAY)) as f64 / NS_PER_DAY as f64;
        let load = 1.0 + 0.6 * (std::f64::consts::TAU * (t_of_day - 0.3)).sin();
        ts += -mean_gap * (1.0 - rng.f64()).ln() / load;
        let qts = (ts as i64).min(end_ns - 1);
        let h = qts / 3_600_000_000_000;
        if h != hour {
            hour = h;
            // Short-lived processes come and go.
            for p in procs.iter_mut() {
                if rng.chance(p.tpl.churn) {
                    attr.0.remove(&p.pid);
                    *p = make_proc(p.tpl, &mut rng, host);
                    attr.0.insert(p.pid, p.attrs.clone());
                }
            }
            for (w, p) in weights.iter_mut().zip(&procs) {
                *w = p.tpl.weight * (0.3 + rng.f64());
            }
            rebuild(&weights, &mut cum);
        }
        let x = rng.f64() * cum.last().copied().unwrap_or(1.0);
        let mut proc = &procs[cum.partition_point(|&c| c < x).min(procs.len() - 1)];
        let roll = rng.f64();
        let (mut qb, mut rb, answered) = if tunnel_host && roll < 0.004 {
            proc = &tunnel_proc;
            let len = 52 + rng.below(8) as usize;
            let (q, r) = tunnel_messages(&mut rng, TUNNEL_DOMAIN, len)?;
            (q, r, true)
        } else if slow_tunnel_host && roll < 0.0008 {
            proc = &tunnel_proc;
            let (q, r) = {
                let len = 30 + rng.below(10) as usize;
                tunnel_messages(&mut rng, SLOW_TUNNEL_DOMAIN, len)?
            };
            (q, r, true)
        } else if dga_host && roll < 0.012 {
            proc = &dga_proc;
            let info = NameInfo {
                name: format!(
                    "{}.{}",
                    (0..12 + rng.below(6))
                        .map(|_| (b'a' + rng.below(26) as u8) as char)
                        .collect::<String>(),
                    ["com", "info", "net", "biz"][rng.below(4) as usize]
                ),
                cnames: 0,
                addrs: 0,
                ttl: 0,
                exists: false,
            };
            let (q, r) = build(&info, RecordType::A, ResponseCode::NXDomain, &mut rng)?;
            (q, r, true)
        } else {
            let nx = roll < 0.045;
            let (idx, info) = if nx {
                let k = sh.nx_zipf.sample(&mut rng);
                (k as u32 | 0x8000_0000, &sh.nx[k])
            } else {
                let k = sh.zipf.sample(&mut rng);
                (k as u32, &sh.names[k])
            };
            let t = rng.below(100);
            let qtype = match t {
                0..=54 => RecordType::A,
                55..=86 => RecordType::AAAA,
                87..=94 => RecordType::HTTPS,
                95..=96 => RecordType::TXT,
                97..=98 => RecordType::MX,
                _ => RecordType::SRV,
            };
            let rcode = if !info.exists {
                ResponseCode::NXDomain
            } else if rng.chance(0.002) {
                ResponseCode::ServFail
            } else {
                ResponseCode::NoError
            };
            let key = (idx, u16::from(qtype) ^ (u16::from(rcode) << 12));
            if let std::collections::hash_map::Entry::Vacant(e) = cache.entry(key) {
                e.insert(build(info, qtype, rcode, &mut rng)?);
            }
            let (q, r) = &cache[&key];
            (q.clone(), r.clone(), !rng.chance(0.003))
        };
        let id = rng.next() as u16;
        set_id(&mut qb, id);
        set_id(&mut rb, id);
        let server = if rng.chance(0.15) {
            resolvers[2]
        } else {
            resolvers[(rng.below(2)) as usize]
        };
        let client = match server {
            IpAddr::V6(_) => host_ip6,
            IpAddr::V4(a) if a.is_loopback() => IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            IpAddr::V4(_) => host_ip,
        };
        let flow = Flow {
            transport: Transport::Udp,
            client_ip: client,
            client_port: 32768 + rng.below(28000) as u16,
            server_ip: server,
            server_port: 53,
            sock_cookie: rng.next() | 1,
            side: dnsledger::capture::Side::Client,
        };
        let owner = KernelOwner {
            pid: proc.pid,
            tid: proc.pid + rng.below(4) as u32,
            uid: proc.tpl.uid,
            gid: proc.tpl.uid,
            cgroup_id: proc.cgroup_id,
            netns: if proc.container.is_some() {
                4_026_532_000 + (proc.cgroup_id % 500) as u32
            } else {
                4_026_531_840
            },
            comm: proc.comm,
        };
        // Cache hits answer in well under a millisecond; misses take tens of milliseconds.
        let latency = if rng.chance(0.7) {
            50_000 + rng.below(900_000)
        } else {
            2_000_000 + rng.below(80_000_000)
        } as i64;
        if want_pcap {
            pcap.push((
                qts,
                ip_packet(flow.client_ip, flow.client_port, flow.server_ip, 53, &qb),
            ));
            if answered {
                pcap.push((
                    qts + latency,
                    ip_packet(flow.server_ip, 53, flow.client_ip, flow.client_port, &rb),
                ));
            }
        }
        let qlen = qb.len() as u32;
        pairer.push(
            DnsMessage {
                ts_ns: qts,
                flow,
                from_client: true,
                owner: Some(owner),
                wire_len: qlen,
                bytes: qb,
                capture_error: None,
                stack: None,
            },
            &mut attr,
            &mut out_rows,
        );
        if answered {
            let rlen = rb.len() as u32;
            pairer.push(
                DnsMessage {
                    ts_ns: qts + latency,
                    flow,
                    from_client: false,
                    owner: Some(owner),
                    wire_len: rlen,
                    bytes: rb,
                    capture_error: None,
                    stack: None,
                },
                &mut attr,
                &mut out_rows,
            );
        }
        let new_slot = slot_of(qts);
        if i % 4096 == 4095 || new_slot != slot {
            slot = new_slot;
            pairer.expire(qts, &mut out_rows);
            pushed += out_rows.len() as u64;
            writer.push(out_rows.drain(..));
            let w = pairer.low_watermark().map_or(qts, |w| w.min(qts)) - 1_000_000_000;
            // The rotation clock stands at the slot's start: a segment opened anywhere in a
            // slot is one period old at the next slot, so every slot gets its own segment (with
            // the rows' own times, a segment opened just after a boundary was younger than the
            // period at the next one, and about a third of the slots were skipped).
            let now = if sh.segment_ns > 0 {
                clock(slot * sh.segment_ns - phase)
            } else {
                clock(qts)
            };
            sealed_paths.extend(writer.advance(Some(w), now)?);
        } else if out_rows.len() >= 64 {
            pushed += out_rows.len() as u64;
            writer.push(out_rows.drain(..));
        }
    }
    pairer.flush(&mut out_rows);
    pushed += out_rows.len() as u64;
    writer.push(out_rows.drain(..));
    sealed_paths.extend(writer.close()?);
    if sh.compacted {
        for p in &sealed_paths {
            sort_like_compaction(p)?;
        }
    }
    Ok(HostOut {
        rows: pushed,
        sealed: sealed_paths.len(),
        pcap,
    })
}

/// Rewrites one sealed segment with its rows sorted by (registered_domain, qname, ts), the
/// order `dnsledger compact` gives a host-hour, keeping the footer's key-value metadata and the
/// recorder's writer properties (bloom filters, encodings). The file is replaced by rename.
fn sort_like_compaction(path: &std::path::Path) -> Result<()> {
    use arrow::compute::{
        SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch,
    };
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::metadata::{KeyValue, SortingColumn};

    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let schema = builder.schema().clone();
    let kv: Vec<KeyValue> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|k| k.key != "ARROW:schema")
        .collect();
    let batches = builder.build()?.collect::<Result<Vec<_>, _>>()?;
    let all = concat_batches(&schema, &batches)?;
    let idx_of = |name: &str| schema.index_of(name);
    let keys = [
        dnsledger_schema::col::REGISTERED_DOMAIN,
        dnsledger_schema::col::QNAME,
        dnsledger_schema::col::TS,
    ];
    let sort: Vec<SortColumn> = keys
        .iter()
        .map(|k| {
            Ok(SortColumn {
                values: all.column(idx_of(k)?).clone(),
                options: Some(SortOptions {
                    descending: false,
                    nulls_first: false,
                }),
            })
        })
        .collect::<Result<_, arrow::error::ArrowError>>()?;
    let indices = lexsort_to_indices(&sort, None)?;
    let sorted = take_record_batch(&all, &indices)?;
    let sorting = keys
        .iter()
        .map(|k| {
            Ok(SortingColumn {
                column_idx: idx_of(k)? as i32,
                descending: false,
                nulls_first: false,
            })
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    let props = dnsledger::store::segment::writer_properties()?
        .into_builder()
        .set_sorting_columns(Some(sorting))
        .set_key_value_metadata(Some(kv))
        .build();
    let tmp = path.with_extension("parquet.sorting");
    let out = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let mut w = ArrowWriter::try_new(out, schema, Some(props))?;
    w.write(&sorted)?;
    w.close()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.hosts == 0 || args.days == 0 {
        bail!("--hosts and --days must be at least 1");
    }
    if args.out.join("segments").exists() {
        bail!(
            "{} already holds segments: give an empty or new directory",
            args.out.display()
        );
    }
    let t0 = Instant::now();
    let n = args.hosts as u64;
    let names = universe(args.seed, args.names);
    let nx = nx_universe(args.seed, (args.names / 20).max(10));
    let sh = Arc::new(Shared {
        zipf: Zipf::new(names.len(), 1.0),
        nx_zipf: Zipf::new(nx.len(), 0.8),
        names,
        nx,
        rows_per_host: (0..n)
            .map(|h| args.rows / n + u64::from(h < args.rows % n))
            .collect(),
        days: args.days,
        keep_raw: !args.no_raw,
        out: args.out.clone(),
        seed: args.seed,
        segment_ns: if args.compacted {
            0
        } else {
            args.segment_secs as i64 * 1_000_000_000
        },
        compacted: args.compacted,
        end_ns: args.end * 1_000_000_000,
    });
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let want_pcap = args.pcap.is_some();
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let sh = Arc::clone(&sh);
            let next = Arc::clone(&next);
            let hosts = args.hosts;
            std::thread::spawn(move || -> Result<Vec<(u32, HostOut)>> {
                let mut done = Vec::new();
                loop {
                    let h = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if h >= hosts {
                        return Ok(done);
                    }
                    done.push((h, run_host(&sh, h, want_pcap)?));
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        match h.join() {
            Ok(r) => results.extend(r?),
            Err(_) => bail!("a generator thread panicked"),
        }
    }
    results.sort_by_key(|(h, _)| *h);
    let rows: u64 = results.iter().map(|(_, r)| r.rows).sum();
    let sealed: usize = results.iter().map(|(_, r)| r.sealed).sum();
    if let Some(path) = &args.pcap {
        let mut pkts: Vec<(i64, Vec<u8>)> = results
            .iter_mut()
            .flat_map(|(_, r)| std::mem::take(&mut r.pcap))
            .collect();
        pkts.sort_by_key(|p| p.0);
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        let header = pcap_file::pcap::PcapHeader {
            datalink: pcap_file::DataLink::RAW,
            ts_resolution: pcap_file::TsResolution::NanoSecond,
            ..Default::default()
        };
        let mut w = pcap_file::pcap::PcapWriter::with_header(BufWriter::new(file), header)?;
        for (ts, data) in &pkts {
            let d = Duration::from_nanos(*ts as u64);
            w.write_packet(&pcap_file::pcap::PcapPacket::new(
                d,
                data.len() as u32,
                data,
            ))?;
        }
        w.into_writer().flush()?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let manifest = serde_json::json!({
        "generator_version": GENERATOR_VERSION,
        "rows": rows,
        "hosts": args.hosts,
        "days": args.days,
        "seed": args.seed,
        "names": args.names,
        "raw": !args.no_raw,
        "segments": sealed,
        "seconds": secs,
        "segment_secs": if args.compacted { 0 } else { args.segment_secs },
        "compacted": args.compacted,
        "threads": threads,
        "tunnel_domain": TUNNEL_DOMAIN,
        "slow_tunnel_domain": SLOW_TUNNEL_DOMAIN,
        "dga_comm": DGA.comm,
        "popular_name": sh.names[0].name,
        "rare_name": sh.names[sh.names.len() / 2].name,
        "end_unix": args.end,
    });
    std::fs::write(
        args.out.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    println!("{manifest}");
    Ok(())
}
