//! The command line of `dnsledger`: clear errors for bad input, without privileges or BPF; the
//! payload cap on an import; the shipped systemd units. (What spans the kernel or `dnsql` is in
//! the top-level `tests/` suite.)

use std::process::Command;

use dnsledger_tests::segments::all_rows;

const DNSLEDGER: &str = env!("CARGO_BIN_EXE_dnsledger");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(DNSLEDGER)
        .args(args)
        .output()
        .expect("run dnsledger");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flag_values_are_named() {
    for (flag, value) in [
        ("--rotate-size", "12XB"),
        ("--rotate-age", "soon"),
        ("--ports", "53,dns"),
        ("--max-payload", "70000"),
        ("--pair-timeout", "0s"),
        ("--max-pending", "lots"),
        ("--user", "no-such-user-x"),
    ] {
        let (code, _, err) = run(&["record", flag, value]);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(
            err.contains(value),
            "{flag} {value}: error does not name the value: {err}"
        );
        assert!(
            err.contains(flag),
            "{flag} {value}: error does not name the flag: {err}"
        );
    }
}

#[test]
fn bad_config_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "rotate-age = \"later\"\n").expect("write");
    let data = dir.path().join("data");
    let (code, _, err) = run(&[
        "import",
        "--config",
        cfg.to_str().expect("utf8"),
        "--data-dir",
        data.to_str().expect("utf8"),
        "/nonexistent.pcap",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("bad.toml") && err.contains("rotate-age") && err.contains("later"),
        "{err}"
    );
}

#[test]
fn unprivileged_record_fails_with_cause_and_remedy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(DNSLEDGER)
        .args(["record", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("run setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("needs root"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created before the check"
    );
}

#[test]
fn import_of_a_missing_file_names_it_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (code, _, err) = run(&[
        "import",
        "--data-dir",
        data.to_str().expect("utf8"),
        "/nonexistent/capture.pcap",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/capture.pcap"), "{err}");
}

#[test]
fn payload_cap_cuts_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let capture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/pcap/dns-badlabel.pcap"
    );
    let (code, _, err) = run(&[
        "import",
        "--max-payload",
        "512",
        "--data-dir",
        data.to_str().expect("utf8"),
        capture,
    ]);
    assert_eq!(code, 0, "{err}");
    let rows = all_rows(&data);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r.response_raw.as_ref().map(Vec::len), Some(512));
    // The original length stays visible.
    assert!(
        r.response_size.is_some_and(|n| n > 60_000),
        "{:?}",
        r.response_size
    );
    let e = r.parse_error.as_deref().unwrap_or_default();
    assert!(e.contains("--max-payload") && e.contains("512"), "{e}");
}

/// The shipped systemd units are valid (systemd-analyze verify), with ExecStart pointed at
/// the binary under test.
#[test]
fn systemd_units_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dist = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist");
    let mut units = Vec::new();
    for name in [
        "dnsledger.service",
        "dnsledger-prune.service",
        "dnsledger-prune.timer",
        "dnsledger-ship.service",
        "dnsledger-ship.timer",
    ] {
        let text = std::fs::read_to_string(format!("{dist}/{name}")).expect("read unit");
        let text = text.replace("/usr/bin/dnsledger", DNSLEDGER);
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write unit");
        units.push(path);
    }
    // --man=no: the Documentation= pages are installed by the package, not here (the package
    // test, scripts/test-deb.sh, verifies the installed units with them).
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("systemd-analyze (systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Warnings about our units (not about unrelated host units) fail the test too.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("dnsledger")).collect();
    assert!(ours.is_empty(), "{}", ours.join("\n"));
}

/// The capabilities are stated once (`capture::privs::CAPABILITIES`): the shipped unit's bounding
/// set is exactly what loading and the run need, plus what `--user` needs when its ExecStart
/// switches user (the package's unit does) and what the libc lookup probes need, and the
/// README's Privileges section names each.
#[test]
fn capabilities_are_stated_once() {
    use dnsledger::capture::privs::{Phase, needed};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(root.join("dist/dnsledger.service")).expect("unit");
    let bounding: std::collections::BTreeSet<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet in the unit")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart in the unit");
    let switches_user = exec_start.split_whitespace().any(|w| w == "--user");
    let run: std::collections::BTreeSet<String> = needed(Phase::Load)
        .chain(needed(Phase::Kept))
        .chain(needed(Phase::User).filter(|_| switches_user))
        .chain(needed(Phase::Lookups))
        .map(|c| c.to_string())
        .collect();
    assert_eq!(bounding, run);
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let privileges = readme
        .split("\n## ")
        .find(|s| s.starts_with("Privileges"))
        .expect("a Privileges section");
    for phase in [Phase::Load, Phase::Kept, Phase::User, Phase::Lookups] {
        for cap in needed(phase) {
            let cap = cap.to_string();
            assert!(privileges.contains(&format!("`{cap}`")), "README: {cap}");
            if phase == Phase::User {
                assert!(unit.contains(&cap), "unit's --user note: {cap}");
            }
        }
    }
}

/// The config file the Debian package installs as /etc/dnsledger/dnsledger.toml parses as
/// shipped (every key commented out: the defaults), documents every key of the file format, and
/// still parses with every commented-out example enabled (so no example value has rotted).
#[test]
fn packaged_config_file_parses_and_shows_every_key() {
    use clap::Args;
    use dnsledger::config::Overrides;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/dnsledger.toml");
    assert_eq!(
        Overrides::load(&path).expect("the shipped file"),
        Overrides::default()
    );
    let text = std::fs::read_to_string(&path).expect("read");
    let is_key = |k: &str| !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    let enabled: Vec<&str> = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            // The account must exist where the file is parsed (and not be root): nobody does.
            Some(rest) if rest.starts_with("user = ") => "user = \"nobody\"",
            Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| is_key(k)) => rest,
            _ => l,
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let all = dir.path().join("all.toml");
    std::fs::write(&all, enabled.join("\n")).expect("write");
    let parsed = Overrides::load(&all).expect("every example enabled");
    assert_ne!(parsed, Overrides::default());
    let keys = Overrides::augment_args(clap::Command::new("keys"));
    for arg in keys.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "config" {
            continue;
        }
        assert!(
            enabled.iter().any(|l| l.starts_with(&format!("{long} = "))),
            "dist/dnsledger.toml does not show `{long}`"
        );
    }
}
