//! Helpers shared by the tests that run the real `saferc` binary.

#![allow(dead_code, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs `saferc` with `args`, colours off.
pub fn saferc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_saferc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run saferc: {e}"))
}

/// [`saferc`] that must succeed (its stderr in the failure message).
pub fn saferc_ok(args: &[&str]) -> Output {
    let out = saferc(args);
    assert!(
        out.status.success(),
        "saferc {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh, empty temporary directory for this test process.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("saferc-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}
