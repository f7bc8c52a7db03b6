//! `saferc explain CODE`: print the documentation page of a diagnostic code.

use crate::diagnostic::{codes, Code};

pub(super) fn run(name: &str) -> i32 {
    match Code::parse(name) {
        Some(code) => {
            print!("{}", codes::page(code));
            0
        }
        None => {
            eprintln!("error: `{name}` is not a saferc diagnostic code (they look like `E0101`)");
            2
        }
    }
}
