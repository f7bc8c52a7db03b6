//! The standard library, embedded in the binary so that an installed
//! `saferc` resolves `use "std/..."` anywhere.
//!
//! `std/std.safer` is the prelude: its declarations (the built-in scorers)
//! are in scope in every module without a `use`.

/// Every embedded module: its `std/...` path and its text.
pub const FILES: &[(&str, &str)] = &[
    ("std/std.safer", include_str!("../../stdlib/std.safer")),
    (
        "std/rubrics/safety.safer",
        include_str!("../../stdlib/rubrics/safety.safer"),
    ),
    (
        "std/rubrics/helpfulness.safer",
        include_str!("../../stdlib/rubrics/helpfulness.safer"),
    ),
    (
        "std/rubrics/guard.safer",
        include_str!("../../stdlib/rubrics/guard.safer"),
    ),
    (
        "std/prompts/reflect.safer",
        include_str!("../../stdlib/prompts/reflect.safer"),
    ),
    (
        "std/rollouts.safer",
        include_str!("../../stdlib/rollouts.safer"),
    ),
];

/// The prelude's path.
pub const PRELUDE: &str = "std/std.safer";

/// The text of an embedded module.
pub fn file(path: &str) -> Option<&'static str> {
    FILES.iter().find(|(p, _)| *p == path).map(|(_, t)| *t)
}

/// Every embedded path, for "did you mean".
pub fn paths() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(p, _)| *p)
}
