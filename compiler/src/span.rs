//! Byte spans into source files.
//!
//! Every AST node carries a [`Span`]; diagnostics point at spans and are
//! rendered against the [`SourceMap`](crate::source::SourceMap) late, at the
//! edge (CLI, JSON, editor).

use serde::Serialize;

/// Identifies one file in a [`SourceMap`](crate::source::SourceMap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
pub struct SourceId(pub u32);

/// A half-open byte range `[start, end)` in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub struct Span {
    /// First byte of the range.
    pub start: u32,
    /// One past the last byte of the range.
    pub end: u32,
    /// The file the offsets index into.
    #[serde(skip)]
    pub source: SourceId,
}

impl Span {
    /// A span from byte offsets; offsets beyond `u32::MAX` saturate (the lexer
    /// refuses files that large long before this matters).
    pub fn new(source: SourceId, start: usize, end: usize) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Span {
            start: clamp(start),
            end: clamp(end.max(start)),
            source,
        }
    }

    /// The smallest span covering both `self` and `other`.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
            source: self.source,
        }
    }

    /// The byte range, for slicing source text.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    /// Number of bytes covered.
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    /// True when the span covers no byte (a position).
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}
