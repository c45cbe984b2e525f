//! Compiles `bpf/dnsledger.bpf.c` with clang and generates the libbpf-rs skeleton.

use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let bpf_dir = manifest.join("../../bpf");
    let src = bpf_dir.join("dnsledger.bpf.c");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("dnsledger.skel.rs");
    SkeletonBuilder::new()
        .source(&src)
        .clang_args([
            "-Wall".to_string(),
            "-Werror".to_string(),
            format!("-I{}", bpf_dir.display()),
        ])
        .build_and_generate(&out)
        .expect("compile bpf/dnsledger.bpf.c (is clang installed?) and generate its skeleton");
    for f in ["dnsledger.bpf.c", "dnsledger.h", "vmlinux.h"] {
        println!("cargo:rerun-if-changed={}", bpf_dir.join(f).display());
    }
}
