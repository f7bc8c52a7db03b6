//! Fuzz target: any bytes go through the parser and, when they parse, the
//! formatter; the output must parse again to the same tree (spans aside).
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run parse -- -max_total_time=60`
//! (cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable
//! toolchain provide them). Seed it with the repository's `.safer` files:
//! `mkdir -p fuzz/corpus/parse && find . -name '*.safer' -not -path './target/*' -exec cp {} fuzz/corpus/parse/ \;`

#![no_main]

use libfuzzer_sys::fuzz_target;
use saferc::span::SourceId;
use saferc::{fmt, syntax};

fuzz_target!(|data: &[u8]| {
    let Ok(module) = syntax::parse_bytes(SourceId(0), data) else {
        return;
    };
    let text = std::str::from_utf8(data).unwrap_or_default();
    let formatted = fmt::format_module(&module, text);
    let reparsed = match syntax::parse(SourceId(0), &formatted) {
        Ok(m) => m,
        Err(d) => panic!("formatted output does not parse: {}\n{formatted}", d.message),
    };
    assert_eq!(
        fmt::format_module(&reparsed, &formatted),
        formatted,
        "formatting is not idempotent"
    );
});
