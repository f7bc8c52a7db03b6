//! `saferc explain CODE`: print the documentation page of a diagnostic code.

use crate::diagnostic::{codes, Code};

pub(super) fn run(name: &str) -> i32 {
    if let Some(code) = Code::parse(name) {
        print!("{}", codes::page(code));
        return 0;
    }
    // A code's number, with or without its `E` (`0101`, `E101`, `101`).
    let trimmed = name.trim();
    let digits = trimmed.strip_prefix(['E', 'e']).unwrap_or(trimmed);
    let number = (!digits.is_empty() && digits.len() <= 4)
        .then(|| digits.bytes().all(|b| b.is_ascii_digit()))
        .filter(|&all| all)
        .and_then(|_| digits.parse::<u32>().ok());
    match number {
        Some(n) => match Code::parse(&format!("E{n:04}")) {
            Some(code) => eprintln!("error: `{name}` is written `{code}`: `saferc explain {code}`"),
            None => eprintln!("error: saferc has no diagnostic `E{n:04}`; the codes are the pages of docs/errors/"),
        },
        None => eprintln!("error: `{name}` is not a saferc diagnostic code (they look like `E0101`)"),
    }
    2
}
