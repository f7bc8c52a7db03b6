//! Which comments document a node: the `##` lines right above it, each on
//! its own line, with no blank line between them and it. The parser keeps
//! them as the node's `docs`; the formatter must print them there, and
//! must never put another `##` comment (a remark after code, one in a
//! declaration's head) where it would become documentation.

use super::ast::{Comment, DeclBody, ItemKind, Module, Stmt, StmtKind};
use std::ops::Range;

/// The indices into `comments` (in source order) of the `##` lines that
/// document the node starting at byte `start` of `text`.
pub fn documenting(text: &str, comments: &[Comment], start: usize) -> Range<usize> {
    let end = comments.partition_point(|c| (c.span.start as usize) < start);
    let mut first = end;
    let mut boundary = start;
    for c in comments[..end].iter().rev() {
        if !c.doc {
            break;
        }
        // Only whitespace may separate the comment from what follows, and
        // at most one line break (a blank line detaches it). Checked from
        // the end so that a far-away comment costs nothing.
        let between = text.get(c.span.end as usize..boundary).unwrap_or("x");
        let mut newlines = 0;
        let attached = between.bytes().rev().all(|b| {
            newlines += usize::from(b == b'\n');
            super::lexer::is_blank(b) && newlines <= 1
        });
        // A `##` after code on its line is a trailing remark on that code,
        // no documentation of what comes next.
        let before = text.get(..c.span.start as usize).unwrap_or("");
        let own_line = before
            .bytes()
            .rev()
            .take_while(|b| *b != b'\n')
            .all(|b| b == b' ' || b == b'\t' || b == b'\r');
        if !attached || !own_line {
            break;
        }
        first -= 1;
        boundary = c.span.start as usize;
    }
    first..end
}

/// For each comment of `module`, whether it documents an item or a
/// statement (see [`documenting`]).
pub fn documentation_marks(module: &Module, text: &str) -> Vec<bool> {
    let mut marks = vec![false; module.comments.len()];
    let mut mark = |start: u32| {
        for i in documenting(text, &module.comments, start as usize) {
            marks[i] = true;
        }
    };
    for item in &module.items {
        mark(item.span.start);
        if let ItemKind::Decl(decl) = &item.kind {
            if let DeclBody::Block(block) = &decl.body {
                mark_statements(&block.stmts, &mut mark);
            }
        }
    }
    marks
}

fn mark_statements(stmts: &[Stmt], mark: &mut impl FnMut(u32)) {
    for stmt in stmts {
        mark(stmt.span.start);
        match &stmt.kind {
            StmtKind::Block { body, .. } => mark_statements(&body.stmts, mark),
            StmtKind::Criterion {
                body: Some(body), ..
            } => mark_statements(&body.stmts, mark),
            _ => {}
        }
    }
}
