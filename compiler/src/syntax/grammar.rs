//! The pest parser derived from `grammar/safer.pest`.

#![allow(missing_docs)]

use pest_derive::Parser;

/// The grammar text; referencing it makes cargo rebuild when the file
/// changes (pest-derive does not track it).
pub const GRAMMAR: &str = include_str!("../../../grammar/safer.pest");

/// The generated parser; its rules are `Rule::*`.
#[derive(Parser)]
#[grammar = "../grammar/safer.pest"]
pub struct SaferParser;
