//! A data directory on a tiny filesystem that fills up: the recorder survives, counts what it
//! cannot keep, resumes when space returns, and every sealed segment stays readable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dnsledger_tests::harness::*;
use dnsledger_tests::segments::*;

/// A tmpfs mounted by the test and unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mkdir");
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0750"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

const BURST: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('127.0.0.1', 53)); s.settimeout(2)
for i in range(int(sys.argv[2])):
    name = f'{sys.argv[1]}{i}.a.test'
    m = struct.pack('>HHHHHH', i, 0x0100, 1, 0, 0, 0)
    m += b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\x00' + struct.pack('>HH', 1, 1)
    s.send(m); s.recv(512)
"#;

fn burst(prefix: &str, n: usize) {
    run_client(Command::new(python()).args(["-c", BURST, prefix, &n.to_string()]));
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df avail")
}

#[test]
fn bpf_disk_full_survives_counts_and_resumes() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Dnsmasq::start(dir.path());
    let data = dir.path().join("data");
    let _fs = Tmpfs::mount(&data, "6m");
    let mut rec = Recorder::start(&data, &["--rotate-age", "1s", "--min-free", "0"]);
    burst("before", 100);
    std::thread::sleep(Duration::from_secs(2));

    // Fill the filesystem to the last few KiB.
    let filler = data.join("filler");
    let free = free_bytes(&data);
    std::fs::write(&filler, vec![0u8; free.saturating_sub(16 * 1024) as usize]).expect("fill");
    burst("during", 2000);
    std::thread::sleep(Duration::from_secs(3));
    assert!(rec.child_running(), "the recorder died on a full disk");

    std::fs::remove_file(&filler).expect("free space");
    std::thread::sleep(Duration::from_secs(2));
    burst("after", 100);
    std::thread::sleep(Duration::from_secs(2));
    let logs = rec.stop();
    let log = logs.join("\n");
    assert!(
        log.contains("cannot write segments"),
        "no write error was reported:\n{log}"
    );
    assert!(
        log.contains("writing resumed"),
        "writing did not resume:\n{log}"
    );

    // Every sealed segment is whole and readable; nothing after the space came back is lost.
    let files = segment_files(&data);
    let mut lost = 0u64;
    for f in &files {
        let (_, meta) = read_segment(f);
        lost += meta
            .get("dnsledger.rows_lost")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    let rows = all_rows(&data);
    let count = |p: &str| {
        rows.iter()
            .filter(|r| r.qname.as_deref().is_some_and(|q| q.starts_with(p)))
            .count()
    };
    assert_eq!(count("before"), 100, "{log}");
    assert_eq!(count("after"), 100, "{log}");
    // Rows of the full period were kept in memory and written later, or counted as lost.
    assert_eq!(
        count("during") as u64 + lost,
        2000,
        "during: {} lost: {lost}\n{log}",
        count("during")
    );
}

/// `prune` beside a recorder that keeps sealing, two prunes at a time; dry runs change nothing.
#[test]
fn bpf_prune_while_recording() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Dnsmasq::start(dir.path());
    let data = dir.path().join("data");
    let rec = Recorder::start(&data, &["--rotate-age", "1s"]);
    let prune = |args: &[&str]| {
        Command::new(&*DNSLEDGER)
            .arg("prune")
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .expect("run prune")
    };
    let mut pruned = 0;
    for round in 0..6 {
        burst(&format!("p{round}-"), 50);
        std::thread::sleep(Duration::from_millis(1200));
        let before = segment_files(&data);
        let dry = prune(&["--max-size", "1", "--dry-run"]);
        assert!(
            dry.status.success(),
            "{}",
            String::from_utf8_lossy(&dry.stderr)
        );
        assert_eq!(segment_files(&data), before, "--dry-run deleted something");
        assert!(String::from_utf8_lossy(&dry.stdout).contains("would delete"));
        // Two at once: they take turns on the lock; both succeed.
        let a = Command::new(&*DNSLEDGER)
            .args(["prune", "--max-size", "1", "--data-dir"])
            .arg(&data)
            .output();
        let b = prune(&["--max-age", "1s"]);
        let a = a.expect("prune a");
        assert!(a.status.success() && b.status.success(), "{a:?} {b:?}");
        pruned += String::from_utf8_lossy(&a.stdout)
            .matches("deleted /")
            .count()
            + String::from_utf8_lossy(&b.stdout)
                .matches("deleted /")
                .count();
        // The spool and in-progress data are never touched.
        for sub in ["spool", "inprogress"] {
            assert!(data.join(sub).is_dir(), "{sub} removed");
        }
    }
    let logs = rec.stop();
    assert!(pruned > 0, "nothing was ever pruned");
    assert!(
        !logs
            .iter()
            .any(|l| l.contains("could not seal") || l.contains("cannot write")),
        "the recorder tripped over a prune:\n{}",
        logs.join("\n")
    );
    // What the recorder sealed after the last prune is there and readable.
    assert!(!all_rows(&data).is_empty());
}

/// `record --max-size`: the recorder deletes its own oldest segments after each seal, keeps the
/// newest, and leaves other hosts' segments in the tree alone.
#[test]
fn bpf_own_size_cap_deletes_oldest_segments() {
    let _g = bpf_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let _server = Dnsmasq::start(dir.path());
    let data = dir.path().join("data");
    let other = data.join("segments/host=other-host/date=2020-01-01/hour=00");
    std::fs::create_dir_all(&other).expect("mkdir");
    let fixture = dnsledger_tests::fixture::files_under(
        &repo_root().join("testdata/segments/host=host-c/date=2023-02-21/hour=08"),
    )
    .into_iter()
    .next()
    .expect("a fixture segment of host-c at 2023-02-21T08");
    let foreign = other.join("20200101T000000Z-other-host-1-0.parquet");
    std::fs::copy(fixture, &foreign).expect("copy");
    let cap: u64 = 120 * 1024;
    let rec = Recorder::start(&data, &["--rotate-age", "1s", "--max-size", "120KiB"]);
    let rounds = 8;
    for round in 0..rounds {
        burst(&format!("cap{round}-"), 20);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let logs = rec.stop();
    let log = logs.join("\n");
    assert!(log.contains("retention: deleted"), "{log}");
    assert!(foreign.exists(), "another host's segment was deleted");
    let own: Vec<PathBuf> = segment_files(&data)
        .into_iter()
        .filter(|p| !p.starts_with(data.join("segments/host=other-host")))
        .collect();
    let bytes: u64 = own
        .iter()
        .map(|p| std::fs::metadata(p).expect("meta").len())
        .sum();
    assert!(bytes <= cap, "{bytes} bytes kept over a {cap}-byte cap");
    assert!(!own.is_empty(), "everything was deleted");
    // What is left is the newest rounds, without holes.
    let mut present: Vec<usize> = own
        .iter()
        .flat_map(|p| rows(&read_segment(p).0))
        .filter_map(|r| {
            let q = r.qname?;
            q.strip_prefix("cap")?.split('-').next()?.parse().ok()
        })
        .collect();
    present.sort_unstable();
    present.dedup();
    assert_eq!(
        present.last(),
        Some(&(rounds - 1)),
        "newest round deleted: {present:?}"
    );
    assert!(present.len() < rounds, "nothing was deleted: {present:?}");
    assert!(
        present.windows(2).all(|w| w[1] == w[0] + 1),
        "a hole in what was kept: {present:?}"
    );
}
