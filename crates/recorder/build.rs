//! Compiles `bpf/dnsledger.bpf.c` and `bpf/lookups.bpf.c` with clang and generates their
//! libbpf-rs skeletons.

use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let bpf_dir = manifest.join("../../bpf");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // The capture programs, and the libc lookup probes (a separate object: loaded only when
    // lookups are recorded; it shares the capture programs' ring buffer by fd).
    for (src, skel) in [
        ("dnsledger.bpf.c", "dnsledger.skel.rs"),
        ("lookups.bpf.c", "lookups.skel.rs"),
    ] {
        SkeletonBuilder::new()
            .source(bpf_dir.join(src))
            .clang_args([
                "-Wall".to_string(),
                "-Werror".to_string(),
                format!("-I{}", bpf_dir.display()),
            ])
            .build_and_generate(out_dir.join(skel))
            .unwrap_or_else(|e| {
                panic!("compile bpf/{src} (is clang installed?) and generate its skeleton: {e}")
            });
    }
    for f in [
        "dnsledger.bpf.c",
        "dnsledger.h",
        "lookups.bpf.c",
        "lookups.h",
        "owner.h",
        "vmlinux.h",
    ] {
        println!("cargo:rerun-if-changed={}", bpf_dir.join(f).display());
    }
}
