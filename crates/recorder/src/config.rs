//! Recorder configuration: defaults < TOML file < environment < flags, validated once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
pub const MAX_PORTS: usize = 16;
/// Largest DNS payload cap: a DNS message is at most 65535 bytes.
pub const MAX_PAYLOAD_LIMIT: u32 = 65535;

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
    #[error("invalid `{key}` in {path}: {message}")]
    Value {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// Keys of the TOML file: the long flag names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub ports: Option<Vec<u16>>,
    pub rotate_size: Option<String>,
    pub rotate_age: Option<String>,
    pub max_payload: Option<String>,
    pub pair_timeout: Option<String>,
    pub max_pending: Option<usize>,
    pub no_raw: Option<bool>,
    pub ring_size: Option<String>,
    pub min_free: Option<String>,
    /// `record --user`: USER[:GROUP] to run as once attached.
    pub user: Option<String>,
    /// `record --max-size` / `--max-age`: the recorder's own retention.
    pub max_size: Option<String>,
    pub max_age: Option<String>,
    /// `record --stacks`: capture the user stack of the code sending each query.
    pub stacks: Option<bool>,
}

impl FileConfig {
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
}

/// The validated settings of `dnsledger record` / `import`.
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
    /// `record`: USER[:GROUP] to run as once attached (`None`: stay root, capabilities dropped).
    pub user: Option<String>,
    /// `record`: delete this host's oldest sealed segments beyond this total size.
    pub max_size: Option<u64>,
    /// `record`: delete this host's sealed segments older than this.
    pub max_age: Option<Duration>,
    /// `record`: capture and symbolize the user stack of each query's sender.
    pub stacks: bool,
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
        }
    }

    /// Applies a TOML file over these settings.
    pub fn apply_file(&mut self, path: &Path, file: FileConfig) -> Result<(), ConfigError> {
        let bad = |key: &'static str, message: String| ConfigError::Value {
            path: path.into(),
            key,
            message,
        };
        if let Some(d) = file.data_dir {
            self.data_dir = d;
        }
        if let Some(p) = file.ports {
            self.ports = validate_ports(p).map_err(|m| bad("ports", m))?;
        }
        if let Some(s) = file.rotate_size {
            self.rotate_size = parse_size(&s).map_err(|m| bad("rotate-size", m))?;
        }
        if let Some(s) = file.rotate_age {
            self.rotate_age = parse_duration(&s).map_err(|m| bad("rotate-age", m))?;
        }
        if let Some(s) = file.max_payload {
            self.max_payload = parse_max_payload(&s).map_err(|m| bad("max-payload", m))?;
        }
        if let Some(s) = file.pair_timeout {
            self.pair_timeout = parse_duration(&s).map_err(|m| bad("pair-timeout", m))?;
        }
        if let Some(n) = file.max_pending {
            self.max_pending = validate_max_pending(n).map_err(|m| bad("max-pending", m))?;
        }
        if let Some(b) = file.no_raw {
            self.keep_raw = !b;
        }
        if let Some(v) = file.min_free {
            self.min_free = parse_min_free(&v).map_err(|m| bad("min-free", m))?;
        }
        if let Some(u) = file.user {
            self.user = Some(u);
        }
        if let Some(v) = file.max_size {
            self.max_size = Some(parse_size(&v).map_err(|m| bad("max-size", m))?);
        }
        if let Some(v) = file.max_age {
            self.max_age = Some(parse_duration(&v).map_err(|m| bad("max-age", m))?);
        }
        if let Some(b) = file.stacks {
            self.stacks = b;
        }
        if let Some(s) = file.ring_size {
            self.ring_size = parse_ring_size(&s).map_err(|m| bad("ring-size", m))?;
        }
        Ok(())
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
                let total = fs_size(dir).unwrap_or(0) as f64;
                (total * p / 100.0) as u64
            }
        }
    }
}

/// Size of the filesystem holding `path` (or its nearest existing ancestor).
fn fs_size(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data, zero is a valid value; the call writes only into `st`
    // and reads the NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_blocks.saturating_mul(st.f_frsize))
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
        let mut s = Settings::defaults(DEFAULT_PORTS);
        s.apply_file(&path, FileConfig::load(&path).expect("load"))
            .expect("apply");
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.ports, vec![53, 5300]);
        assert_eq!(s.rotate_age, Duration::from_secs(2));
        assert!(!s.keep_raw);
        assert!(s.stacks);
        assert_eq!(s.rotate_size, DEFAULT_ROTATE_SIZE);

        std::fs::write(&path, "rotate-size = \"big\"\n").expect("write");
        let err = s
            .apply_file(&path, FileConfig::load(&path).expect("load"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rotate-size") && err.contains("`big`"),
            "{err}"
        );

        std::fs::write(&path, "colour = 1\n").expect("write");
        let err = FileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn min_free_sizes_and_percentages() {
        assert_eq!(parse_min_free("1GiB"), Ok(MinFree::Bytes(1 << 30)));
        assert_eq!(parse_min_free("0"), Ok(MinFree::Bytes(0)));
        assert_eq!(parse_min_free("5%"), Ok(MinFree::Percent(5.0)));
        assert!(parse_min_free("100%").is_err());
        assert!(parse_min_free("lots%").unwrap_err().contains("lots%"));
        let total = fs_size(Path::new("/")).expect("size of /");
        let ten = MinFree::Percent(10.0).bytes_for(Path::new("/no/such/dir/below/root"));
        assert!(ten > 0 && ten.abs_diff(total / 10) <= 1, "{ten} vs {total}");
    }
}
