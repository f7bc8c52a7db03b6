//! Records, for run manifests, the compiler that builds the runtime
//! (`SAFERC_RUSTC_VERSION`, e.g. `rustc 1.91.0 (f8297e351 2025-10-28)`) and
//! the burn release it links (`SAFERC_BURN_VERSION`, from the workspace's
//! `Cargo.lock`).

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SAFERC_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");

    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let burn = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|text| {
            text.split("[[package]]")
                .find(|p| p.contains("\nname = \"burn\"\n"))
                .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "0.21 (no Cargo.lock read)".into());
    println!("cargo:rustc-env=SAFERC_BURN_VERSION={burn}");
    println!("cargo:rerun-if-changed={}", lock.display());
}
