//! Recorder configuration: defaults < TOML file < environment < flags, validated once.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dnsledger_lake::LakeUrl;
use serde::Deserialize;

use crate::capture::abi::MAX_PORTS;
use crate::capture::privs::{RunAs, parse_run_as};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/dnsledger";
pub const DEFAULT_PORTS: &[u16] = &[53];
/// Ports `dnsledger import` looks at unless told otherwise: DNS, mDNS and LLMNR.
pub const DEFAULT_IMPORT_PORTS: &[u16] = &[53, 5353, 5355];
pub const DEFAULT_ROTATE_SIZE: u64 = 128 * 1024 * 1024;
pub const DEFAULT_ROTATE_AGE: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_PAYLOAD: u32 = 4096;
pub const DEFAULT_PAIR_TIMEOUT: Duration = Duration::from_secs(5);
/// 8 MiB holds ~0.4 s of the busiest stream measured here (50k q/s, ~20 MB/s of events) while
/// the capture thread, which only copies records out, is descheduled; user space buffers more
/// behind it. The ring's pages are mapped twice and count twice in RSS.
pub const DEFAULT_RING_SIZE: u64 = 8 * 1024 * 1024;
pub const DEFAULT_SPOOL_SYNC: Duration = Duration::from_secs(1);
pub const DEFAULT_MIN_FREE: u64 = 256 * 1024 * 1024;
/// Queries waiting for their response, at most. A pending query holds its parsed message and
/// raw bytes (~0.5 KiB for a typical query), so the table stays under ~32 MiB; 65,536 covers
/// 13k q/s with no answers at all for the default 5 s timeout.
pub const DEFAULT_MAX_PENDING: usize = 65_536;
/// Largest DNS payload cap: a DNS message is at most 65535 bytes.
pub const MAX_PAYLOAD_LIMIT: u32 = 65535;

/// Environment variables and the key each one sets (between the file and the flags).
pub const ENV_VARS: &[(&str, &str)] = &[
    ("data-dir", "DNSLEDGER_DATA"),
    ("ship-to", "DNSLEDGER_SHIP_TO"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Toml {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

/// A comma-separated port list as one flag value (`53,5353`; clap would take a `Vec` as many
/// values), or a TOML array (`ports = [53, 5353]`); validated either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortList(pub Vec<u16>);

/// Parses `--ports`.
pub fn parse_port_list(s: &str) -> Result<PortList, String> {
    parse_ports(s).map(PortList)
}

/// Every setting of `record` and `import` that the TOML file, the environment or a flag can
/// set: one struct for the three, so a key is declared once. `None` leaves the layer below in
/// place. The flags are the long names; the file's keys are the same names.
///
/// Keys marked "record only" are accepted in the file by `import` and ignored there; as flags,
/// `import` rejects them (see [`Overrides::record_only_flag`]).
#[derive(Clone, Debug, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Overrides {
    /// Data directory: sealed segments go to <DIR>/segments, in-progress files elsewhere.
    /// [default: /var/lib/dnsledger] [env: DNSLEDGER_DATA]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// DNS ports to watch, comma-separated, at most 16. [default: 53 (record), 53,5353,5355 (import)]
    #[arg(long, value_name = "PORTS", value_parser = parse_port_list)]
    #[serde(default, deserialize_with = "de::ports")]
    pub ports: Option<PortList>,
    /// Seal a segment once it reaches this size (e.g. 128MiB). [default: 128MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de::size")]
    pub rotate_size: Option<u64>,
    /// Seal a segment once it is this old (e.g. 5m, 30s). [default: 5m]
    #[arg(long, value_name = "AGE", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub rotate_age: Option<Duration>,
    /// Bytes of each DNS message to keep at most (12..65535); longer ones are kept cut short
    /// with their original length. [default: 4096]
    #[arg(long, value_name = "BYTES", value_parser = parse_max_payload)]
    #[serde(default, deserialize_with = "de::max_payload")]
    pub max_payload: Option<u32>,
    /// A query with no response after this long is written as `unanswered`. [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub pair_timeout: Option<Duration>,
    /// Queries waiting for a response, at most: beyond it the oldest is written as
    /// `unanswered` early and counted (`dnsledger.pair_evicted`). [default: 65536]
    #[arg(long, value_name = "N", value_parser = parse_max_pending)]
    #[serde(default, deserialize_with = "de::max_pending")]
    pub max_pending: Option<usize>,
    /// Do not store the raw DNS messages (query_raw/response_raw columns stay empty).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub no_raw: Option<bool>,
    /// Stop writing while the data directory's filesystem has less free space than this
    /// (rows wait in memory, then the oldest are dropped and counted): a size (1GiB) or a
    /// share of the filesystem (5%); 0 turns it off. [default: 256MiB]
    #[arg(long, value_name = "SIZE|PCT%", value_parser = parse_min_free)]
    #[serde(default, deserialize_with = "de::min_free")]
    pub min_free: Option<MinFree>,
    /// Kernel ring buffer size (rounded up to a power of two, 16KiB..1GiB). [default: 8MiB]
    /// Record only.
    #[arg(long, value_name = "SIZE", value_parser = parse_ring_size)]
    #[serde(default, deserialize_with = "de::ring_size")]
    pub ring_size: Option<u32>,
    /// How often transactions are synced to the crash-safe spool; after kill -9 or a power
    /// cut at most this much is lost. [default: 1s] Record only.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub spool_sync: Option<Duration>,
    /// Run as this user (and group; default: the user's primary group) once the programs are
    /// attached, keeping only the capabilities `record --help` lists as kept. The data directory is
    /// given to that user at start, so analysts in GROUP can read the segments.
    /// [default: stay root, with the same two capabilities] Record only.
    #[arg(long, value_name = "USER[:GROUP]", value_parser = parse_run_as)]
    #[serde(default, deserialize_with = "de::run_as")]
    pub user: Option<RunAs>,
    /// Keep this host's sealed segments under this total size (e.g. 20GiB): after each seal
    /// the oldest are deleted, as `dnsledger prune --max-size` would. [default: no cap]
    /// Record only.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de::size")]
    pub max_size: Option<u64>,
    /// Delete this host's sealed segments older than this (e.g. 7d), checked every minute.
    /// [default: keep] Record only.
    #[arg(long, value_name = "AGE", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub max_age: Option<Duration>,
    /// Also record the user stack of the code that sent each query (`stack` column),
    /// symbolized while the process runs. Costs CPU on every sendto, sendmsg, sendmmsg, write
    /// and writev of the host (other syscalls run no program); see the README for
    /// measurements. Record only.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub stacks: Option<bool>,
    /// Do not record encrypted-DNS bypass (connections to port 853, DoT and DoQ, and to port
    /// 443 of addresses on the DoH list). [default: recorded] Record only.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub no_bypass: Option<bool>,
    /// The DoH endpoint list: one IPv4 or IPv6 address per line (text after it and `#`
    /// comments are ignored); HTTPS to these addresses is recorded as `doh-likely`. Names are
    /// not resolved at record time. [default: /usr/share/dnsledger/doh-endpoints.txt, the
    /// list the package installs; without it only DoT and DoQ are recorded] Record only.
    #[arg(long, value_name = "FILE")]
    pub doh_list: Option<PathBuf>,
    /// Do not link a local stub resolver's upstream queries to the local processes it asks
    /// for (`requester_*` and `stub_cache` columns stay NULL). [default: linked] Record only.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub no_stub_link: Option<bool>,
    /// Do not record libc-level lookups (uprobes on getaddrinfo, gethostbyname,
    /// gethostbyname2 and getnameinfo of every glibc and musl mapped). [default: recorded]
    /// Record only.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub no_lookups: Option<bool>,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9422, DNSWatch's
    /// port): DNSWatch's counters by process plus dnsledger_* series. [default: off]
    /// Record only.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Distinct `process` label values of the DNSWatch counters; later processes are counted
    /// under process="other". [default: 100] Record only.
    #[arg(long, value_name = "N")]
    pub metrics_max_processes: Option<usize>,
    /// Ship each segment to this data lake once sealed (s3://bucket/prefix, gs://…, az://…,
    /// file:///path), from a background thread that never holds up capture; the backlog found
    /// at start is shipped too. Retention then keeps segments not yet shipped. Credentials and
    /// endpoint: see `dnsledger ship --help`. [default: off] [env: DNSLEDGER_SHIP_TO]
    /// Record only.
    #[arg(long, value_name = "URL", value_parser = parse_lake_url)]
    #[serde(default, deserialize_with = "de::lake_url")]
    pub ship_to: Option<LakeUrl>,
    /// Also record the server side: the queries a local DNS server (dnsmasq, unbound, ...)
    /// receives on a DNS port and its answers, as rows with side = server carrying the client's
    /// address and port and the server process. A local client of a local server then gives
    /// two rows, one per end; recipes and live views count the client side unless asked
    /// (`--by client`). [default: client side only] Record only.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub serve_side: Option<bool>,
    /// TOML file with the same keys as the long flags (data-dir, ports, rotate-size, ...).
    /// The environment and flags override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// The keys only `record` uses (flag ids).
pub const RECORD_ONLY: [&str; 14] = [
    "ring_size",
    "spool_sync",
    "user",
    "max_size",
    "max_age",
    "stacks",
    "no_bypass",
    "doh_list",
    "no_stub_link",
    "no_lookups",
    "metrics_listen",
    "metrics_max_processes",
    "ship_to",
    "serve_side",
];

impl Overrides {
    /// Reads a TOML file of overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Toml {
            path: path.into(),
            source: Box::new(source),
        })
    }

    /// The overrides the environment makes ([`ENV_VARS`]); `get` reads a variable (empty
    /// counts as unset).
    pub fn from_env(get: impl Fn(&str) -> Option<OsString>) -> Self {
        let get = |var: &str| get(var).filter(|v| !v.is_empty());
        Overrides {
            data_dir: get("DNSLEDGER_DATA").map(PathBuf::from),
            // A bad value is reported when a command needs it (see `ship_to_from_env`).
            ship_to: get("DNSLEDGER_SHIP_TO").and_then(|v| v.to_str()?.parse().ok()),
            ..Overrides::default()
        }
    }

    /// The flag of the first record-only key set here, if any (`import` rejects them as
    /// flags).
    pub fn record_only_flag(&self) -> Option<String> {
        // In the order of RECORD_ONLY.
        let set = [
            self.ring_size.is_some(),
            self.spool_sync.is_some(),
            self.user.is_some(),
            self.max_size.is_some(),
            self.max_age.is_some(),
            self.stacks.is_some(),
            self.no_bypass.is_some(),
            self.doh_list.is_some(),
            self.no_stub_link.is_some(),
            self.no_lookups.is_some(),
            self.metrics_listen.is_some(),
            self.metrics_max_processes.is_some(),
            self.ship_to.is_some(),
            self.serve_side.is_some(),
        ];
        RECORD_ONLY
            .iter()
            .zip(set)
            .find(|(_, set)| *set)
            .map(|(id, _)| format!("--{}", id.replace('_', "-")))
    }
}

/// The process environment, for [`Settings::resolve`].
pub fn process_env(var: &str) -> Option<OsString> {
    std::env::var_os(var)
}

/// The validated settings of `dnsledger record` / `import` (and a standalone `snoop`/`top`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub ports: Vec<u16>,
    pub rotate_size: u64,
    pub rotate_age: Duration,
    pub max_payload: u32,
    pub pair_timeout: Duration,
    /// Pending queries at most; beyond it the oldest is written unanswered and counted.
    pub max_pending: usize,
    pub keep_raw: bool,
    pub ring_size: u32,
    /// Spool sync interval (live recording); `None` for imports.
    pub spool_sync: Option<Duration>,
    /// Stop writing below this much free space on the data directory's filesystem.
    pub min_free: MinFree,
    /// `record`: the user to run as once attached (`None`: stay root, capabilities dropped).
    pub user: Option<RunAs>,
    /// `record`: delete this host's oldest sealed segments beyond this total size.
    pub max_size: Option<u64>,
    /// `record`: delete this host's sealed segments older than this.
    pub max_age: Option<Duration>,
    /// `record`: capture and symbolize the user stack of each query's sender.
    pub stacks: bool,
    /// `record`: record encrypted-DNS bypass (DoT, DoQ, DoH to listed addresses).
    pub bypass: bool,
    /// `record`: the DoH endpoint list; `None`: the packaged list if it is there.
    pub doh_list: Option<PathBuf>,
    /// `record`: link a local stub's upstream queries to the processes it asks for.
    pub stub_link: bool,
    /// `record`: record libc-level lookups (uprobes).
    pub lookups: bool,
    /// `record`: serve Prometheus metrics on this address.
    pub metrics_listen: Option<SocketAddr>,
    /// `record`: distinct `process` label values of the DNSWatch counters.
    pub metrics_max_processes: usize,
    /// `record`, `ship`, `prune`: the data lake sealed segments are shipped to.
    pub ship_to: Option<LakeUrl>,
    /// `record`: also record a local DNS server's side of its conversations (side = server).
    pub serve_side: bool,
}

impl Settings {
    pub fn defaults(ports: &[u16]) -> Self {
        Self {
            data_dir: DEFAULT_DATA_DIR.into(),
            ports: ports.to_vec(),
            rotate_size: DEFAULT_ROTATE_SIZE,
            rotate_age: DEFAULT_ROTATE_AGE,
            max_payload: DEFAULT_MAX_PAYLOAD,
            pair_timeout: DEFAULT_PAIR_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            keep_raw: true,
            ring_size: DEFAULT_RING_SIZE as u32,
            spool_sync: None,
            min_free: MinFree::Bytes(DEFAULT_MIN_FREE),
            user: None,
            max_size: None,
            max_age: None,
            stacks: false,
            bypass: true,
            doh_list: None,
            stub_link: true,
            lookups: true,
            metrics_listen: None,
            metrics_max_processes: crate::live::metrics::DEFAULT_MAX_PROCESSES,
            ship_to: None,
            serve_side: false,
        }
    }

    /// The one merge of the settings: defaults < TOML file (`flags.config`) < environment
    /// (`env`, see [`ENV_VARS`]) < flags. Every value was validated when its layer was parsed.
    pub fn resolve(
        default_ports: &[u16],
        flags: &Overrides,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, ConfigError> {
        let mut s = Settings::defaults(default_ports);
        if let Some(path) = &flags.config {
            s.apply(&Overrides::load(path)?);
        }
        s.apply(&Overrides::from_env(env));
        s.apply(flags);
        Ok(s)
    }

    /// Sets every key `o` sets.
    fn apply(&mut self, o: &Overrides) {
        let Overrides {
            data_dir,
            ports,
            rotate_size,
            rotate_age,
            max_payload,
            pair_timeout,
            max_pending,
            no_raw,
            min_free,
            ring_size,
            spool_sync,
            user,
            max_size,
            max_age,
            stacks,
            no_bypass,
            doh_list,
            no_stub_link,
            no_lookups,
            metrics_listen,
            metrics_max_processes,
            ship_to,
            serve_side,
            config: _,
        } = o.clone();
        set(&mut self.data_dir, data_dir);
        set(&mut self.ports, ports.map(|p| p.0));
        set(&mut self.rotate_size, rotate_size);
        set(&mut self.rotate_age, rotate_age);
        set(&mut self.max_payload, max_payload);
        set(&mut self.pair_timeout, pair_timeout);
        set(&mut self.max_pending, max_pending);
        set(&mut self.keep_raw, no_raw.map(|b| !b));
        set(&mut self.min_free, min_free);
        set(&mut self.ring_size, ring_size);
        set(&mut self.spool_sync, spool_sync.map(Some));
        set(&mut self.user, user.map(Some));
        set(&mut self.max_size, max_size.map(Some));
        set(&mut self.max_age, max_age.map(Some));
        set(&mut self.stacks, stacks);
        set(&mut self.bypass, no_bypass.map(|b| !b));
        set(&mut self.doh_list, doh_list.map(Some));
        set(&mut self.stub_link, no_stub_link.map(|b| !b));
        set(&mut self.lookups, no_lookups.map(|b| !b));
        set(&mut self.metrics_listen, metrics_listen.map(Some));
        set(&mut self.metrics_max_processes, metrics_max_processes);
        set(&mut self.ship_to, ship_to.map(Some));
        set(&mut self.serve_side, serve_side);
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// The data directory of the commands that only read it (`status`, `prune`, `snoop`, `top`):
/// the flag, else the environment, else the default; the same layers as [`Settings::resolve`].
pub fn data_dir(flag: Option<&Path>, env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let mut s = Settings::defaults(DEFAULT_PORTS);
    s.apply(&Overrides::from_env(env));
    s.apply(&Overrides {
        data_dir: flag.map(Path::to_path_buf),
        ..Overrides::default()
    });
    s.data_dir
}

/// The data directory and shipping destination of `ship` and `prune`: flags, else the
/// environment, else `--config`'s file, else the defaults (the layers of [`Settings::resolve`]).
pub fn ship_settings(
    data_dir: Option<&Path>,
    ship_to: Option<&LakeUrl>,
    config: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<(PathBuf, Option<LakeUrl>), ConfigError> {
    let flags = Overrides {
        data_dir: data_dir.map(Path::to_path_buf),
        ship_to: ship_to.cloned(),
        config: config.map(Path::to_path_buf),
        ..Overrides::default()
    };
    let s = Settings::resolve(DEFAULT_PORTS, &flags, env)?;
    Ok((s.data_dir, s.ship_to))
}

/// `DNSLEDGER_SHIP_TO` when it is set but not a usable lake URL (the environment layer skips
/// it; commands that ship say why with this).
pub fn ship_to_env_error(env: impl Fn(&str) -> Option<OsString>) -> Option<String> {
    let v = env("DNSLEDGER_SHIP_TO").filter(|v| !v.is_empty())?;
    let text = v.to_string_lossy().into_owned();
    match text.parse::<LakeUrl>() {
        Ok(_) => None,
        Err(e) => Some(format!("DNSLEDGER_SHIP_TO: {e}")),
    }
}

/// Parses a lake URL flag (`--ship-to`, `ship --to`); an unknown scheme is named.
pub fn parse_lake_url(s: &str) -> Result<LakeUrl, String> {
    s.parse()
        .map_err(|e: dnsledger_lake::LakeError| e.to_string())
}

/// A `Duration` as the signed nanoseconds the pipeline counts in (saturating).
pub fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, duration_ns)
}

/// Now, in whole seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now_secs() -> u64 {
    u64::try_from(unix_now_ns() / 1_000_000_000).unwrap_or(0)
}

/// The file's values: strings parsed by the same functions as the flags.
mod de {
    use super::*;
    use serde::Deserializer;
    use serde::de::Error as _;

    fn parsed<'de, D, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        parse(&s).map(Some).map_err(D::Error::custom)
    }

    pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        parsed(d, parse_size)
    }
    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        parsed(d, parse_duration)
    }
    pub fn max_payload<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        parsed(d, parse_max_payload)
    }
    pub fn ring_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        parsed(d, parse_ring_size)
    }
    pub fn min_free<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MinFree>, D::Error> {
        parsed(d, parse_min_free)
    }
    pub fn run_as<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RunAs>, D::Error> {
        parsed(d, parse_run_as)
    }
    pub fn max_pending<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        let n = usize::deserialize(d)?;
        validate_max_pending(n).map(Some).map_err(D::Error::custom)
    }
    pub fn lake_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LakeUrl>, D::Error> {
        parsed(d, parse_lake_url)
    }
    pub fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PortList>, D::Error> {
        let v = Vec::<u16>::deserialize(d)?;
        validate_ports(v)
            .map(|p| Some(PortList(p)))
            .map_err(D::Error::custom)
    }
}

/// Parses `128MiB`, `64 KB`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let v: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e| format!("`{s}` is not a size ({e}); use e.g. 128MiB, 64KB or 1048576"))?;
    if v.as_u64() == 0 {
        return Err(format!("`{s}`: the size must be greater than zero"));
    }
    Ok(v.as_u64())
}

/// Free space to leave on the data directory's filesystem: bytes, or a share of its size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MinFree {
    Bytes(u64),
    /// Percent of the filesystem's size.
    Percent(f64),
}

impl MinFree {
    /// The threshold in bytes for the filesystem holding `dir` (`Percent` of its size; 0 when
    /// the size cannot be read).
    pub fn bytes_for(self, dir: &Path) -> u64 {
        match self {
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => {
                let total = crate::store::fs::space(dir).map_or(0, |s| s.total) as f64;
                (total * p / 100.0) as u64
            }
        }
    }
}

/// Parses `--min-free`: a size (`1GiB`), `0` (off) or a percentage of the filesystem (`5%`).
pub fn parse_min_free(s: &str) -> Result<MinFree, String> {
    match s.trim().strip_suffix('%') {
        Some(p) => {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("`{s}` is not a percentage; use e.g. 5%"))?;
            if !(0.0..100.0).contains(&v) {
                return Err(format!("`{s}`: a percentage from 0% to below 100%"));
            }
            Ok(MinFree::Percent(v))
        }
        None => parse_size_or_zero(s).map(MinFree::Bytes),
    }
}

/// Like [`parse_size`], but `0` (off) is allowed.
pub fn parse_size_or_zero(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    parse_size(s)
}

/// Parses `5m`, `2s`, `500ms`.
/// A point in time (UTC ns): RFC 3339 (`2026-12-04T10:00:00Z`) or an age before now (`6h`).
pub fn parse_time_or_age(s: &str) -> Result<i64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let d = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| format!("`{s}` is before 1970"))?;
        return i64::try_from(d.as_nanos()).map_err(|_| format!("`{s}` is too far ahead"));
    }
    match parse_duration(s) {
        Ok(age) => Ok(unix_now_ns().saturating_sub(duration_ns(age))),
        Err(_) => Err(format!(
            "`{s}` is neither an RFC 3339 time (2026-12-04T10:00:00Z) nor an age (6h)"
        )),
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); use e.g. 5m, 2s or 500ms"))?;
    if d.is_zero() {
        return Err(format!("`{s}`: the duration must be greater than zero"));
    }
    Ok(d)
}

/// Parses the pending-query bound: a count of at least 1.
pub fn parse_max_pending(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{s}` is not a number of queries (e.g. 65536)"))?;
    validate_max_pending(n)
}

fn validate_max_pending(n: usize) -> Result<usize, String> {
    if n == 0 {
        return Err("`0`: at least one query must be able to wait for its response".into());
    }
    Ok(n)
}

/// Parses a comma-separated port list: `53,5353`.
pub fn parse_ports(s: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let port: u16 = part
            .parse()
            .map_err(|_| format!("`{part}` is not a port number (1-65535)"))?;
        ports.push(port);
    }
    validate_ports(ports)
}

fn validate_ports(mut ports: Vec<u16>) -> Result<Vec<u16>, String> {
    if ports.is_empty() {
        return Err("at least one port is needed".into());
    }
    if let Some(p) = ports.iter().find(|&&p| p == 0) {
        return Err(format!("`{p}` is not a port number (1-65535)"));
    }
    ports.sort_unstable();
    ports.dedup();
    if ports.len() > MAX_PORTS {
        return Err(format!(
            "{} ports given, at most {MAX_PORTS} can be watched",
            ports.len()
        ));
    }
    Ok(ports)
}

/// Parses the DNS payload capture cap (12 bytes .. 65535 bytes).
pub fn parse_max_payload(s: &str) -> Result<u32, String> {
    let v = parse_size(s)?;
    if !(12..=u64::from(MAX_PAYLOAD_LIMIT)).contains(&v) {
        return Err(format!(
            "`{s}` is out of range: a DNS payload cap is 12 to {MAX_PAYLOAD_LIMIT} bytes"
        ));
    }
    Ok(v as u32)
}

/// Parses the ring buffer size, rounded up to a power of two (16 KiB to 1 GiB; anything
/// below a few MiB loses events under load, which is what tests of loss accounting want).
pub fn parse_ring_size(s: &str) -> Result<u32, String> {
    let v = parse_size(s)?;
    if !(16 << 10..=1 << 30).contains(&v) {
        return Err(format!(
            "`{s}` is out of range: the ring buffer is 16KiB to 1GiB"
        ));
    }
    Ok(v.next_power_of_two() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("128MiB"), Ok(128 * 1024 * 1024));
        assert_eq!(parse_size("1048576"), Ok(1048576));
        assert!(parse_size("12XB").unwrap_err().contains("`12XB`"));
        assert!(parse_size("0").is_err());
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").unwrap_err().contains("`soon`"));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse_ports("5353, 53,53"), Ok(vec![53, 5353]));
        assert!(parse_ports("53,dns").unwrap_err().contains("`dns`"));
        assert!(parse_ports("0").is_err());
        assert!(parse_ports("70000").unwrap_err().contains("`70000`"));
        let many: Vec<String> = (1..=17).map(|p| p.to_string()).collect();
        assert!(
            parse_ports(&many.join(","))
                .unwrap_err()
                .contains("17 ports")
        );
    }

    #[test]
    fn payload_and_ring() {
        assert_eq!(parse_max_payload("4096"), Ok(4096));
        assert!(
            parse_max_payload("64KiB")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_max_payload("4").is_err());
        assert_eq!(parse_ring_size("3MiB"), Ok(4 << 20));
        assert!(parse_ring_size("4KiB").is_err());
        assert_eq!(parse_ring_size("16KiB"), Ok(16 << 10));
    }

    #[test]
    fn toml_file_overrides_defaults_and_names_bad_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dnsledger.toml");
        std::fs::write(
            &path,
            "data-dir = \"/tmp/x\"\nports = [53, 5300]\nrotate-age = \"2s\"\nno-raw = true\nstacks = true\n",
        )
        .expect("write");
        let flags = Overrides {
            config: Some(path.clone()),
            ..Overrides::default()
        };
        let s = Settings::resolve(DEFAULT_PORTS, &flags, no_env).expect("resolve");
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.ports, vec![53, 5300]);
        assert_eq!(s.rotate_age, Duration::from_secs(2));
        assert!(!s.keep_raw);
        assert!(s.stacks);
        assert_eq!(s.rotate_size, DEFAULT_ROTATE_SIZE);

        std::fs::write(&path, "rotate-size = \"big\"\n").expect("write");
        let err = Settings::resolve(DEFAULT_PORTS, &flags, no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rotate-size") && err.contains("`big`"),
            "{err}"
        );

        std::fs::write(&path, "colour = 1\n").expect("write");
        let err = Overrides::load(&path).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    /// The flags as `record` and `import` parse them.
    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        o: Overrides,
    }

    /// One key of the settings: its value in the file, in the environment (when it has a
    /// variable) and as a flag, and what the settings hold after each layer.
    struct Case {
        key: &'static str,
        file: &'static str,
        /// The file's value under the flag (differs from `file` only for switches, which a flag
        /// can only turn on).
        file_under_flag: &'static str,
        env: Option<&'static str>,
        flag: &'static [&'static str],
        get: fn(&Settings) -> String,
        default: &'static str,
        from_file: &'static str,
        from_env: &'static str,
        from_flag: &'static str,
    }

    fn dbg<T: std::fmt::Debug>(v: T) -> String {
        format!("{v:?}")
    }

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        Case { key: "data-dir", file: "\"/file\"", file_under_flag: "\"/file\"", env: Some("/env"),
            flag: &["--data-dir", "/flag"], get: |s| dbg(&s.data_dir),
            default: "\"/var/lib/dnsledger\"", from_file: "\"/file\"", from_env: "\"/env\"", from_flag: "\"/flag\"" },
        Case { key: "ports", file: "[5300, 53]", file_under_flag: "[5300, 53]", env: None,
            flag: &["--ports", "5353"], get: |s| dbg(&s.ports),
            default: "[53]", from_file: "[53, 5300]", from_env: "[53, 5300]", from_flag: "[5353]" },
        Case { key: "rotate-size", file: "\"1MiB\"", file_under_flag: "\"1MiB\"", env: None,
            flag: &["--rotate-size", "2MiB"], get: |s| dbg(s.rotate_size),
            default: "134217728", from_file: "1048576", from_env: "1048576", from_flag: "2097152" },
        Case { key: "rotate-age", file: "\"2s\"", file_under_flag: "\"2s\"", env: None,
            flag: &["--rotate-age", "3s"], get: |s| dbg(s.rotate_age),
            default: "300s", from_file: "2s", from_env: "2s", from_flag: "3s" },
        Case { key: "max-payload", file: "\"512\"", file_under_flag: "\"512\"", env: None,
            flag: &["--max-payload", "1024"], get: |s| dbg(s.max_payload),
            default: "4096", from_file: "512", from_env: "512", from_flag: "1024" },
        Case { key: "pair-timeout", file: "\"1s\"", file_under_flag: "\"1s\"", env: None,
            flag: &["--pair-timeout", "7s"], get: |s| dbg(s.pair_timeout),
            default: "5s", from_file: "1s", from_env: "1s", from_flag: "7s" },
        Case { key: "max-pending", file: "10", file_under_flag: "10", env: None,
            flag: &["--max-pending", "20"], get: |s| dbg(s.max_pending),
            default: "65536", from_file: "10", from_env: "10", from_flag: "20" },
        Case { key: "no-raw", file: "true", file_under_flag: "false", env: None,
            flag: &["--no-raw"], get: |s| dbg(!s.keep_raw),
            default: "false", from_file: "true", from_env: "true", from_flag: "true" },
        Case { key: "min-free", file: "\"5%\"", file_under_flag: "\"5%\"", env: None,
            flag: &["--min-free", "1GiB"], get: |s| dbg(s.min_free),
            default: "Bytes(268435456)", from_file: "Percent(5.0)", from_env: "Percent(5.0)", from_flag: "Bytes(1073741824)" },
        Case { key: "ring-size", file: "\"1MiB\"", file_under_flag: "\"1MiB\"", env: None,
            flag: &["--ring-size", "2MiB"], get: |s| dbg(s.ring_size),
            default: "8388608", from_file: "1048576", from_env: "1048576", from_flag: "2097152" },
        Case { key: "spool-sync", file: "\"2s\"", file_under_flag: "\"2s\"", env: None,
            flag: &["--spool-sync", "3s"], get: |s| dbg(s.spool_sync),
            default: "None", from_file: "Some(2s)", from_env: "Some(2s)", from_flag: "Some(3s)" },
        Case { key: "user", file: "\"nobody\"", file_under_flag: "\"nobody\"", env: None,
            flag: &["--user", "65534:100"], get: |s| dbg(s.user.as_ref().map(|u| (&u.spec, u.uid, u.gid))),
            default: "None", from_file: "Some((\"nobody\", 65534, 65534))", from_env: "Some((\"nobody\", 65534, 65534))", from_flag: "Some((\"65534:100\", 65534, 100))" },
        Case { key: "max-size", file: "\"1GiB\"", file_under_flag: "\"1GiB\"", env: None,
            flag: &["--max-size", "2GiB"], get: |s| dbg(s.max_size),
            default: "None", from_file: "Some(1073741824)", from_env: "Some(1073741824)", from_flag: "Some(2147483648)" },
        Case { key: "max-age", file: "\"1h\"", file_under_flag: "\"1h\"", env: None,
            flag: &["--max-age", "2h"], get: |s| dbg(s.max_age),
            default: "None", from_file: "Some(3600s)", from_env: "Some(3600s)", from_flag: "Some(7200s)" },
        Case { key: "stacks", file: "true", file_under_flag: "false", env: None,
            flag: &["--stacks"], get: |s| dbg(s.stacks),
            default: "false", from_file: "true", from_env: "true", from_flag: "true" },
        Case { key: "no-bypass", file: "true", file_under_flag: "false", env: None,
            flag: &["--no-bypass"], get: |s| dbg(!s.bypass),
            default: "false", from_file: "true", from_env: "true", from_flag: "true" },
        Case { key: "doh-list", file: "\"/file.txt\"", file_under_flag: "\"/file.txt\"", env: None,
            flag: &["--doh-list", "/flag.txt"], get: |s| dbg(&s.doh_list),
            default: "None", from_file: "Some(\"/file.txt\")", from_env: "Some(\"/file.txt\")", from_flag: "Some(\"/flag.txt\")" },
        Case { key: "no-stub-link", file: "true", file_under_flag: "false", env: None,
            flag: &["--no-stub-link"], get: |s| dbg(!s.stub_link),
            default: "false", from_file: "true", from_env: "true", from_flag: "true" },
        Case { key: "no-lookups", file: "true", file_under_flag: "false", env: None,
            flag: &["--no-lookups"], get: |s| dbg(!s.lookups),
            default: "false", from_file: "true", from_env: "true", from_flag: "true" },
        Case { key: "metrics-listen", file: "\"127.0.0.1:9422\"", file_under_flag: "\"127.0.0.1:9422\"", env: None,
            flag: &["--metrics-listen", "127.0.0.1:9423"], get: |s| dbg(s.metrics_listen),
            default: "None", from_file: "Some(127.0.0.1:9422)", from_env: "Some(127.0.0.1:9422)", from_flag: "Some(127.0.0.1:9423)" },
        Case { key: "metrics-max-processes", file: "5", file_under_flag: "5", env: None,
            flag: &["--metrics-max-processes", "6"], get: |s| dbg(s.metrics_max_processes),
            default: "100", from_file: "5", from_env: "5", from_flag: "6" },
        Case { key: "ship-to", file: "\"s3://file/x\"", file_under_flag: "\"s3://file/x\"", env: Some("s3://env/y"),
            flag: &["--ship-to", "file:///flag"], get: |s| dbg(s.ship_to.as_ref().map(ToString::to_string)),
            default: "None", from_file: "Some(\"s3://file/x\")", from_env: "Some(\"s3://env/y\")", from_flag: "Some(\"file:///flag\")" },
        Case { key: "serve-side", file: "true", file_under_flag: "false", env: None,
            flag: &["--serve-side"], get: |s| dbg(s.serve_side),
            default: "false", from_file: "true", from_env: "true", from_flag: "true" },
    ];

    #[test]
    fn precedence_of_every_key() {
        use clap::{CommandFactory, Parser};
        // Every key of the struct has a case (`config` names the file; it is no setting).
        let mut ids: Vec<String> = Flags::command()
            .get_arguments()
            .map(|a| a.get_id().as_str().replace('_', "-"))
            .filter(|id| id != "config")
            .collect();
        ids.sort();
        let mut keys: Vec<String> = CASES.iter().map(|c| c.key.to_string()).collect();
        keys.sort();
        assert_eq!(
            ids, keys,
            "a key without a precedence case (or a stale case)"
        );
        // Every variable in ENV_VARS sets the key its case says.
        for (key, _) in ENV_VARS {
            assert!(
                CASES.iter().any(|c| c.key == *key && c.env.is_some()),
                "{key}"
            );
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dnsledger.toml");
        let path_str = path.to_str().expect("utf-8 temp path");
        for c in CASES {
            let var = ENV_VARS.iter().find(|(k, _)| *k == c.key).map(|(_, v)| *v);
            // Every variable is set in the env layer, so a key without one shows it is untouched.
            let env = |v: &str| {
                ENV_VARS.iter().any(|(_, var)| *var == v).then(|| {
                    OsString::from(if Some(v) == var {
                        c.env.unwrap_or("/env")
                    } else {
                        "/other-env"
                    })
                })
            };
            let resolve = |argv: &[&str], with_env: bool| {
                let flags =
                    Flags::try_parse_from(["t", "--config", path_str].iter().chain(argv).copied())
                        .unwrap_or_else(|e| panic!("{}: {e}", c.key));
                let s = if with_env {
                    Settings::resolve(DEFAULT_PORTS, &flags.o, env)
                } else {
                    Settings::resolve(DEFAULT_PORTS, &flags.o, no_env)
                };
                (c.get)(&s.unwrap_or_else(|e| panic!("{}: {e}", c.key)))
            };

            std::fs::write(&path, "").expect("write");
            assert_eq!(resolve(&[], false), c.default, "{}: default", c.key);

            std::fs::write(&path, format!("{} = {}\n", c.key, c.file)).expect("write");
            assert_eq!(
                resolve(&[], false),
                c.from_file,
                "{}: file over default",
                c.key
            );
            assert_eq!(
                resolve(&[], true),
                c.from_env,
                "{}: environment over file",
                c.key
            );
            if c.env.is_some() {
                assert_ne!(c.from_env, c.from_file, "{}: the env case must show", c.key);
            }

            std::fs::write(&path, format!("{} = {}\n", c.key, c.file_under_flag)).expect("write");
            assert_eq!(
                resolve(c.flag, true),
                c.from_flag,
                "{}: flag over environment",
                c.key
            );
            assert_ne!(
                resolve(&[], true),
                c.from_flag,
                "{}: the flag case must show",
                c.key
            );
        }
    }

    #[test]
    fn read_only_commands_take_the_data_dir_from_flag_env_default() {
        let env = |v: &str| (v == "DNSLEDGER_DATA").then(|| OsString::from("/env"));
        assert_eq!(data_dir(None, no_env), PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(data_dir(None, env), PathBuf::from("/env"));
        assert_eq!(
            data_dir(Some(Path::new("/flag")), env),
            PathBuf::from("/flag")
        );
        let empty = |_: &str| Some(OsString::new());
        assert_eq!(data_dir(None, empty), PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn record_only_flags_are_named() {
        use clap::Parser;
        let f = Flags::try_parse_from(["t", "--ports", "53"]).expect("parse");
        assert_eq!(f.o.record_only_flag(), None);
        let f = Flags::try_parse_from(["t", "--stacks"]).expect("parse");
        assert_eq!(f.o.record_only_flag().as_deref(), Some("--stacks"));
        let f = Flags::try_parse_from(["t", "--metrics-max-processes", "3"]).expect("parse");
        assert_eq!(
            f.o.record_only_flag().as_deref(),
            Some("--metrics-max-processes")
        );
    }

    #[test]
    fn nanoseconds_saturate() {
        assert_eq!(duration_ns(Duration::from_millis(1500)), 1_500_000_000);
        assert_eq!(duration_ns(Duration::MAX), i64::MAX);
    }

    #[test]
    fn min_free_sizes_and_percentages() {
        assert_eq!(parse_min_free("1GiB"), Ok(MinFree::Bytes(1 << 30)));
        assert_eq!(parse_min_free("0"), Ok(MinFree::Bytes(0)));
        assert_eq!(parse_min_free("5%"), Ok(MinFree::Percent(5.0)));
        assert!(parse_min_free("100%").is_err());
        assert!(parse_min_free("lots%").unwrap_err().contains("lots%"));
        let total = crate::store::fs::space(Path::new("/"))
            .expect("size of /")
            .total;
        let ten = MinFree::Percent(10.0).bytes_for(Path::new("/no/such/dir/below/root"));
        assert!(ten > 0 && ten.abs_diff(total / 10) <= 1, "{ten} vs {total}");
    }
}
