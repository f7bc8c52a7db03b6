#![doc = include_str!("../ARCHITECTURE.md")]

pub mod cli;
pub mod diagnostic;
pub mod emit;
pub mod fmt;
pub mod graph;
pub mod lsp;
pub mod plan;
pub mod project;
pub mod semantic;
pub mod source;
pub mod span;
pub mod stdlib;
pub mod syntax;

pub use diagnostic::{Code, Diagnostic, Severity};
pub use source::{SourceFile, SourceMap};
pub use span::{SourceId, Span};
