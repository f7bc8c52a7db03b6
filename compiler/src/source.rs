//! The source map: every file the compiler read, by [`SourceId`].
//!
//! Diagnostics hold spans only; the map turns them into file names, snippets
//! and 0-based line/column locations (UTF-16 columns for editors are computed
//! from the same line index).

use crate::diagnostic::{Code, Diagnostic};
use crate::span::{SourceId, Span};
use std::path::{Path, PathBuf};

/// One source file: its display name, its text, and where its lines start.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The name shown in diagnostics (a path relative to where the user ran
    /// the command when possible, or `std/...` for the standard library).
    pub name: String,
    /// The path on disk, when the file came from disk.
    pub path: Option<PathBuf>,
    /// The full text (valid UTF-8; invalid files never get this far),
    /// without the byte-order mark.
    pub text: String,
    /// Whether the file started with a UTF-8 byte-order mark (no part of
    /// the program; `saferc fmt` writes it back).
    pub byte_order_mark: bool,
    line_starts: Vec<usize>,
}

/// A 0-based line and column (columns count Unicode scalar values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    /// 0-based line number.
    pub line: usize,
    /// 0-based column, in characters.
    pub column: usize,
}

impl SourceFile {
    /// Builds a file and indexes its line starts.
    pub fn new(name: impl Into<String>, path: Option<PathBuf>, text: String) -> Self {
        // Lines end at `\n`, `\r\n` or a lone `\r`, as editors (and the
        // language server protocol) count them.
        let bytes = text.as_bytes();
        let mut line_starts = vec![0];
        line_starts.extend(bytes.iter().enumerate().filter_map(|(i, &b)| {
            let ends_line = b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
            ends_line.then_some(i + 1)
        }));
        SourceFile {
            name: name.into(),
            path,
            text,
            byte_order_mark: false,
            line_starts,
        }
    }

    /// The 0-based line/column of a byte offset (clamped to the text).
    pub fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(line) => line,
            Err(next) => next.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        Location { line, column }
    }

    /// The 0-based column of a byte offset in UTF-16 code units (for LSP).
    pub fn utf16_column(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        let line = self.location(offset).line;
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        self.text
            .get(start..offset)
            .map_or(0, |s| s.encode_utf16().count())
    }

    /// The byte offset of a 0-based line and UTF-16 column (for LSP), clamped.
    pub fn offset_of_utf16(&self, line: usize, utf16_column: usize) -> usize {
        let Some(&start) = self.line_starts.get(line) else {
            return self.text.len();
        };
        let end = self
            .line_starts
            .get(line + 1)
            .copied()
            .unwrap_or(self.text.len());
        let mut units = 0;
        for (i, c) in self.text[start..end].char_indices() {
            // A column past the line's end is its end, before the line
            // break (as the protocol says), not the next line's start.
            if units >= utf16_column || c == '\n' || c == '\r' {
                return start + i;
            }
            units += c.len_utf16();
        }
        end
    }

    /// The byte offset where 0-based `line` starts (the text's end past
    /// the last line).
    pub fn line_start(&self, line: usize) -> usize {
        self.line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len())
    }

    /// Number of lines (a trailing newline starts an empty last line).
    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// The source text under a span (empty if the span is out of range).
    pub fn slice(&self, span: Span) -> &str {
        self.text.get(span.range()).unwrap_or("")
    }
}

/// Every file read during one compilation, addressed by [`SourceId`].
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file and returns its id.
    pub fn add(&mut self, file: SourceFile) -> SourceId {
        self.files.push(file);
        SourceId(u32::try_from(self.files.len() - 1).unwrap_or(u32::MAX))
    }

    /// Adds text under a display name (no path on disk).
    pub fn add_text(&mut self, name: impl Into<String>, text: impl Into<String>) -> SourceId {
        self.add(SourceFile::new(name, None, text.into()))
    }

    /// Looks a file up by id.
    pub fn get(&self, id: SourceId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    /// Finds the id of a file already read from `path`.
    pub fn find_path(&self, path: &Path) -> Option<SourceId> {
        self.files
            .iter()
            .position(|f| f.path.as_deref() == Some(path))
            .and_then(|i| u32::try_from(i).ok())
            .map(SourceId)
    }

    /// Reads a file from disk and adds it.
    ///
    /// # Errors
    /// E0111 when it cannot be read; otherwise as [`SourceMap::load_bytes`].
    pub fn load(&mut self, path: &Path) -> Result<SourceId, Box<Diagnostic>> {
        // At most one byte past the limit is read, so that a device that
        // never ends (`/dev/zero`) is refused as too large, not read into
        // all the memory there is.
        let limit = crate::syntax::lexer::MAX_SOURCE_BYTES as u64 + 1;
        let read = |path: &Path| -> std::io::Result<Vec<u8>> {
            use std::io::Read;
            let mut bytes = Vec::new();
            std::fs::File::open(path)?
                .take(limit)
                .read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        let bytes = read(path).map_err(|e| {
            Box::new(
                Diagnostic::error(
                    Code::E0111,
                    format!("cannot read `{}`: {e}", path.display()),
                )
                .with_help("check the path and the file's permissions"),
            )
        })?;
        self.load_bytes(path.display().to_string(), Some(path.to_path_buf()), &bytes)
    }

    /// Adds raw bytes under a name, checking size and UTF-8.
    ///
    /// # Errors
    /// E0100 (not UTF-8) or E0106 (too large). The file is registered anyway,
    /// with a lossy prefix of its text, so that the diagnostic can be shown.
    pub fn load_bytes(
        &mut self,
        name: impl Into<String>,
        path: Option<PathBuf>,
        bytes: &[u8],
    ) -> Result<SourceId, Box<Diagnostic>> {
        let name = name.into();
        let next = SourceId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        match crate::syntax::decode(next, bytes) {
            Ok(text) => {
                let mut file = SourceFile::new(name, path, text.to_string());
                file.byte_order_mark = bytes.starts_with("\u{feff}".as_bytes());
                Ok(self.add(file))
            }
            Err(diag) => {
                let shown = &bytes[..bytes.len().min(64 * 1024)];
                // Control characters (a binary's) would garble the
                // terminal the snippet is shown on; each becomes a `.`
                // (one byte for one: offsets stay).
                let lossy: String = String::from_utf8_lossy(shown)
                    .chars()
                    .map(
                        |c| match c.is_ascii_control() && !matches!(c, '\n' | '\t' | '\r') {
                            true => '.',
                            false => c,
                        },
                    )
                    .collect();
                let id = self.add(SourceFile::new(name, path, lossy));
                let mut diag = *diag;
                if let Err(e) = std::str::from_utf8(bytes) {
                    if diag.code == Code::E0100 {
                        let at = e.valid_up_to();
                        diag = diag.with_primary(Span::new(id, at, at + 1), "invalid byte");
                    }
                }
                Err(Box::new(diag))
            }
        }
    }

    /// All files with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (SourceId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (SourceId(u32::try_from(i).unwrap_or(u32::MAX)), f))
    }
}
