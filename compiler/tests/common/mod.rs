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

/// The text a chat-completions request asks: its user turn's content, or
/// the text part after its images.
pub fn question_text(request: &serde_json::Value) -> &str {
    let content = &request["messages"][1]["content"];
    content
        .as_str()
        .or_else(|| content.as_array()?.iter().find(|p| p["type"] == "text")?["text"].as_str())
        .unwrap_or("")
}

/// The images a chat-completions request shows: each `image_url` part's
/// `data:` URL as its MIME type and decoded bytes (both empty for one that
/// is not a base64 `data:` URL).
pub fn shown_images(request: &serde_json::Value) -> Vec<(String, Vec<u8>)> {
    use base64::Engine;
    let parts = request["messages"][1]["content"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    parts
        .iter()
        .filter(|p| p["type"] == "image_url")
        .map(|p| {
            let url = p["image_url"]["url"].as_str().unwrap_or("");
            let (head, data) = url.split_once(',').unwrap_or(("", ""));
            let mime = head
                .strip_prefix("data:")
                .and_then(|h| h.strip_suffix(";base64"))
                .unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap_or_default();
            (mime.to_string(), bytes)
        })
        .collect()
}
