//! The printer behind [`format_source`](super::format_source).

use super::MAX_WIDTH;
use crate::span::Span;
use crate::syntax::ast::*;
use crate::syntax::lexer::escape;

pub(super) fn print(module: &Module, text: &str) -> String {
    let documentation = crate::syntax::docs::documentation_marks(module, text);
    let printed = |mark: Option<char>| {
        let mut p = Printer {
            text,
            comments: &module.comments,
            documentation: documentation.clone(),
            next_comment: 0,
            out: String::new(),
            indent: 0,
            mark,
        };
        p.module(module);
        p.out
    };
    // Printed once without marks, the mark is a character that output
    // lacks (a string's `\u{e000}` escape prints the character itself),
    // then again with it.
    let plain = printed(None);
    let mut out = match unused_mark(&plain) {
        Some(mark) => align_trailing_comments(&printed(Some(mark)), mark),
        None => plain,
    };
    while out.ends_with("\n\n") {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// What [`Printer::element`] prints: an expression (broken over lines
/// where it must be), or text already laid out (a parameter).
#[derive(Clone, Copy)]
enum Element<'e> {
    Expr(&'e Expr),
    Text(&'e str),
}

struct Printer<'a> {
    text: &'a str,
    comments: &'a [Comment],
    /// For each comment, whether it documents a node (and so must stay
    /// right above it).
    documentation: Vec<bool>,
    next_comment: usize,
    out: String,
    indent: usize,
    /// The character put right before each comment that follows code on
    /// its line, so that [`align_trailing_comments`] can find them once the
    /// whole output is printed (comments in broken calls and lists are
    /// printed into strings before they reach `out`); one the output does
    /// not hold otherwise, or none (comments then sit two spaces after
    /// their code).
    mark: Option<char>,
}

/// A private-use character that `text` (the file as printed without
/// marks) does not contain.
fn unused_mark(text: &str) -> Option<char> {
    ('\u{E000}'..='\u{F8FF}').find(|&c| !text.contains(c))
}

/// The columns a terminal or an editor draws `s` across: two for a wide
/// character (CJK, most emoji), none for a combining mark, one for any
/// other. Widths and trailing-comment columns are counted in these, so
/// that a comment after Chinese text lines up with its neighbours'.
fn width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

/// Aligns the trailing comments of consecutive lines, each found after
/// `mark` (which is removed), to one column: two spaces after the longest
/// code on those lines. A line whose code is already wider than the
/// width limit keeps its comment two spaces after it and ends the run, so
/// that it does not push its neighbours' comments past the limit.
fn align_trailing_comments(out: &str, mark: char) -> String {
    let lines: Vec<&str> = out.split('\n').collect();
    let code_width = |line: &str| {
        line.split_once(mark)
            .map(|(code, _)| width(code))
            .filter(|&width| width <= MAX_WIDTH)
    };
    let mut result = String::with_capacity(out.len() + 64);
    let mut i = 0;
    while i < lines.len() {
        let mut j = i;
        while j < lines.len() && code_width(lines[j]).is_some() {
            j += 1;
        }
        let run = j.max(i + 1);
        let column = lines[i..run]
            .iter()
            .filter_map(|line| code_width(line))
            .max()
            .unwrap_or(0)
            + 2;
        for (k, line) in lines[i..run].iter().enumerate() {
            match line.split_once(mark) {
                Some((code, comment)) => {
                    let drawn = width(code);
                    result.push_str(code);
                    result.push_str(&" ".repeat(column.saturating_sub(drawn).max(2)));
                    result.push_str(comment);
                }
                None => result.push_str(line),
            }
            if i + k + 1 < lines.len() {
                result.push('\n');
            }
        }
        i = run;
    }
    result
}

impl<'a> Printer<'a> {
    // ------------------------------------------------------------ plumbing

    fn pad(&self) -> String {
        "  ".repeat(self.indent)
    }

    /// What goes between code and the comment after it on its line: the
    /// mark [`align_trailing_comments`] pads, or two spaces.
    fn before_trailing_comment(&self) -> String {
        self.mark.map_or_else(|| "  ".to_string(), String::from)
    }

    fn newline(&mut self) {
        self.out.push('\n');
    }

    fn blank_line(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with("\n\n") {
            if !self.out.ends_with('\n') {
                self.out.push('\n');
            }
            self.out.push('\n');
        }
    }

    fn source_between(&self, from: usize, to: usize) -> &str {
        self.text.get(from..to).unwrap_or("")
    }

    /// Comment `index` on a line of its own, at the current indent, to be
    /// followed by the comments before `limit`. A `##` comment that
    /// documents nothing in the source (a remark after code, a line inside
    /// a declaration's head) gets a blank line after it when what follows
    /// is documentation or the node itself, whose documentation it would
    /// otherwise become (not before a closing bracket); before another
    /// comment that documents nothing, that one decides.
    fn own_line(&self, index: usize, limit: usize) -> String {
        self.own_line_moved(index, limit, false)
    }

    /// [`Self::own_line`] for a comment `moved` out of the expression it
    /// was in to a line above its statement: a closing bracket after it in
    /// the source no longer follows it there, so a `##` remark keeps its
    /// blank line (it became the statement's documentation).
    fn own_line_moved(&self, index: usize, limit: usize, moved: bool) -> String {
        let documents = |i: usize| self.documentation.get(i).copied().unwrap_or(false);
        let c = &self.comments[index];
        let mut line = format!("{}{}\n", self.pad(), c.text);
        let remark = c.doc && !documents(index);
        let continued = self
            .comments
            .get(index + 1)
            .is_some_and(|n| (n.span.start as usize) < limit && !documents(index + 1));
        // Before a closing bracket there is nothing it could document.
        let closes = self
            .text
            .get(c.span.end as usize..)
            .is_some_and(|rest| rest.trim_start().starts_with(['}', ']', ')']));
        if remark && !continued && (moved || !closes) {
            line.push('\n');
        }
        line
    }

    fn is_multiline(&self, span: Span) -> bool {
        self.text
            .get(span.range())
            .is_some_and(|s| s.contains('\n'))
    }

    /// True when the source has a blank line right before `start`, looking
    /// back over comments.
    fn blank_before(&self, start: usize) -> bool {
        let head = self.text.get(..start).unwrap_or("");
        let trimmed = head.trim_end_matches([' ', '\t']);
        let mut newlines = 0;
        for c in trimmed.chars().rev() {
            match c {
                '\n' => newlines += 1,
                '\r' | ' ' | '\t' => {}
                _ => break,
            }
        }
        newlines >= 2
    }

    /// Prints the comments above the node at `start`, and keeps the blank
    /// line between them and the node: comments set apart from it stay
    /// apart (a `##` line there documents nothing, and must not become the
    /// node's documentation).
    fn comments_above(&mut self, start: usize) {
        if self.leading_comments(start) && self.blank_before(start) {
            self.blank_line();
        }
    }

    /// Prints, on their own lines, the comments that start before `pos`;
    /// whether there were any.
    fn leading_comments(&mut self, pos: usize) -> bool {
        let first = self.next_comment;
        while let Some(c) = self.comments.get(self.next_comment) {
            if c.span.start as usize >= pos {
                break;
            }
            if self.blank_before(c.span.start as usize)
                && !self.out.is_empty()
                && !self.out.ends_with("{\n")
            {
                self.blank_line();
            }
            let line = self.own_line(self.next_comment, pos);
            self.out.push_str(&line);
            self.next_comment += 1;
        }
        self.next_comment > first
    }

    /// Comments right under the previous item or statement (no blank line
    /// before them) that a blank line separates from what comes next,
    /// `next_start`: printed now, on their own lines, so that they stay with
    /// what they follow (and a `##` line does not become the documentation
    /// of the next declaration, nor move on a second formatting).
    fn comments_after_previous(&mut self, next_start: usize) {
        let first = self.next_comment;
        let Some(c0) = self.comments.get(first) else {
            return;
        };
        if c0.span.start as usize >= next_start || self.blank_before(c0.span.start as usize) {
            return;
        }
        let mut end = first;
        while let Some(c) = self.comments.get(end) {
            let start = c.span.start as usize;
            if start >= next_start || (end > first && self.blank_before(start)) {
                break;
            }
            end += 1;
        }
        let after = self
            .comments
            .get(end)
            .map(|c| c.span.start as usize)
            .filter(|&s| s < next_start)
            .unwrap_or(next_start);
        if !self.blank_before(after) {
            return;
        }
        for index in first..end {
            let line = self.own_line(index, next_start);
            self.out.push_str(&line);
        }
        self.next_comment = end;
    }

    /// After a line-oriented node ending at `end`, printed from `line_start`
    /// in the output: comments inside the node (which its print could not
    /// place, as in an expression) go on their own lines above it and above
    /// its `##` documentation, which stays next to what it documents (a
    /// moved `##` line joins it); a comment on the node's last source line
    /// stays at the end of the printed line.
    fn trailing_comments(&mut self, end: usize, line_start: usize) {
        let mut above = String::new();
        while let Some(c) = self.comments.get(self.next_comment) {
            if c.span.start as usize >= end {
                break;
            }
            above.push_str(&self.own_line_moved(self.next_comment, end, true));
            self.next_comment += 1;
        }
        if !above.is_empty() {
            let at = doc_lines_start(&self.out, line_start);
            self.out.insert_str(at, &above);
        }
        if let Some(c) = self.comments.get(self.next_comment) {
            let start = c.span.start as usize;
            // Nothing but spaces and commas between: a comment after the
            // next statement on the same line is that one's.
            let between = self.source_between(end, start);
            if between.trim_matches([' ', '\t', ',']).is_empty() {
                let before = self.before_trailing_comment();
                self.out.push_str(&before);
                self.out.push_str(&c.text);
                self.next_comment += 1;
            }
        }
        self.newline();
    }

    // ------------------------------------------------------------ items

    fn module(&mut self, module: &Module) {
        let mut prev_use = false;
        for (i, item) in module.items.iter().enumerate() {
            let is_use = matches!(item.kind, ItemKind::Use(_));
            let start = item.span.start as usize;
            if i > 0 {
                self.comments_after_previous(start);
            }
            if i > 0 && !(is_use && prev_use && !self.blank_before(self.first_comment_or(start))) {
                self.blank_line();
            }
            self.comments_above(start);
            self.item(item);
            prev_use = is_use;
        }
        if module.items.is_empty() {
            self.leading_comments(usize::MAX);
        } else {
            let rest_start = self
                .comments
                .get(self.next_comment)
                .map(|c| c.span.start as usize);
            if let Some(start) = rest_start {
                if self.blank_before(start) {
                    self.blank_line();
                }
            }
            self.leading_comments(usize::MAX);
        }
    }

    /// Whether a comment starts inside `span` (comments are in source order:
    /// a binary search, so that a file of many statements stays linear).
    fn has_comment_in(&self, span: Span) -> bool {
        let first = self.comments.partition_point(|c| c.span.start < span.start);
        self.comments
            .get(first)
            .is_some_and(|c| c.span.start < span.end)
    }

    /// The start of the comments attached above `start` (or `start`).
    fn first_comment_or(&self, start: usize) -> usize {
        self.comments
            .get(self.next_comment)
            .map(|c| c.span.start as usize)
            .filter(|&c| c < start)
            .unwrap_or(start)
    }

    fn item(&mut self, item: &Item) {
        let line_start = self.out.len();
        match &item.kind {
            ItemKind::Use(u) => {
                let mut line = format!("use {}", self.string(&u.path));
                if let Some(alias) = &u.alias {
                    line.push_str(" as ");
                    line.push_str(&alias.name);
                }
                self.out.push_str(&line);
                self.trailing_comments(item.span.end as usize, line_start);
            }
            ItemKind::Decl(decl) => self.decl(decl, item.span, line_start),
        }
    }

    fn decl(&mut self, decl: &Decl, span: Span, line_start: usize) {
        let mut head = format!("{} {}", decl.kind.keyword(), decl.name.name);
        if let Some(params) = &decl.params {
            let rendered: Vec<String> = params.iter().map(|p| self.param(p)).collect();
            let flat = format!("{head}({})", rendered.join(", "));
            // The head's line ends with ` {`, or ` = ` and a value: the
            // value's first line (`[` of a list that breaks after it).
            let tail = match &decl.body {
                DeclBody::Block(_) => 2,
                DeclBody::Value(v) => {
                    let one_line = width(&self.flat(v));
                    match self.breakable(v) && width(&flat) + 3 + one_line > MAX_WIDTH {
                        true => 4,
                        false => 3 + one_line,
                    }
                }
            };
            if self.params_written_broken(decl, params) || width(&flat) + tail > MAX_WIDTH {
                let elements: Vec<(Span, String, Element<'_>)> = params
                    .iter()
                    .zip(&rendered)
                    .map(|(p, text)| (p.span, String::new(), Element::Text(text)))
                    .collect();
                let close = self.params_end(decl, params);
                head.push('(');
                head.push_str(&self.one_per_line(&elements, close, ')'));
            } else {
                head = flat;
            }
        }
        match &decl.body {
            DeclBody::Block(block) => {
                self.out.push_str(&head);
                self.block(block, true);
                self.trailing_comments(span.end as usize, line_start);
            }
            DeclBody::Value(value) => {
                head.push_str(" = ");
                // The column where the value starts: after the head's last line.
                let col = width(head.rsplit('\n').next().unwrap_or(""));
                self.out.push_str(&head);
                let v = self.expr(value, col);
                self.out.push_str(&v);
                self.trailing_comments(span.end as usize, line_start);
            }
        }
    }

    /// Whether the source breaks a line between a declaration's `(`, its
    /// parameters and its `)`.
    fn params_written_broken(&self, decl: &Decl, params: &[Param]) -> bool {
        self.breaks_between(
            decl.name.span.end as usize,
            params.iter().map(|p| p.span),
            self.params_end(decl, params),
        )
    }

    /// Whether the source breaks a line between `open` (a bracket), the
    /// elements at `spans` and `close`, not inside an element.
    fn breaks_between(&self, open: usize, spans: impl Iterator<Item = Span>, close: usize) -> bool {
        let mut from = open;
        for span in spans {
            if self
                .source_between(from, span.start as usize)
                .contains('\n')
            {
                return true;
            }
            from = span.end as usize;
        }
        self.source_between(from, close).contains('\n')
    }

    /// The offset of the `)` closing a declaration's parameters.
    fn params_end(&self, decl: &Decl, params: &[Param]) -> usize {
        let from = params
            .last()
            .map_or(decl.name.span.end as usize, |p| p.span.end as usize);
        let mut lexer_end = from;
        // Past commas, spaces and comments to the `)`.
        let rest = self.text.get(from..).unwrap_or("");
        let mut in_comment = false;
        for (i, c) in rest.char_indices() {
            match c {
                ')' if !in_comment => {
                    lexer_end = from + i;
                    break;
                }
                '#' => in_comment = true,
                '\n' | '\r' => in_comment = false,
                _ => {}
            }
        }
        lexer_end
    }

    fn param(&self, p: &Param) -> String {
        let mut s = p.name.name.clone();
        if let Some(ty) = &p.ty {
            s.push_str(": ");
            s.push_str(&ty.name);
        }
        if let Some(default) = &p.default {
            s.push_str(" = ");
            s.push_str(&self.flat(default));
        }
        s
    }

    // ------------------------------------------------------------ blocks

    /// Prints ` { ... }` after a head already on the line (no newline after
    /// the closing brace).
    fn block(&mut self, block: &Block, allow_inline: bool) {
        if allow_inline {
            if let Some(inline) = self.inline_block(block) {
                let line_start = self.out.rfind('\n').map_or(0, |i| i + 1);
                // Columns are characters, as an editor counts them.
                let col = width(&self.out[line_start..]);
                if col + width(&inline) < MAX_WIDTH {
                    self.out.push(' ');
                    self.out.push_str(&inline);
                    return;
                }
            }
        }
        self.out.push_str(" {");
        // A comment on the line of the `{` (`train t {  # the main stage`)
        // stays there: it is about the block, not its first statement.
        if let Some(c) = self.comments.get(self.next_comment) {
            let (open, start) = (block.span.start as usize, c.span.start as usize);
            let first = block
                .stmts
                .first()
                .map_or(block.span.end as usize, |s| s.span.start as usize);
            let on_the_line = self.text.get(open..start).is_some_and(|between| {
                between.starts_with('{') && between[1..].trim_matches([' ', '\t']).is_empty()
            });
            if on_the_line && start < first {
                self.out.push_str("  ");
                self.out.push_str(&c.text);
                self.next_comment += 1;
            }
        }
        self.out.push('\n');
        self.indent += 1;
        let widths = self.alignment(block);
        for (i, stmt) in block.stmts.iter().enumerate() {
            if i > 0 {
                self.comments_after_previous(stmt.span.start as usize);
            }
            let start = self.first_comment_or(stmt.span.start as usize);
            if i > 0 && self.blank_before(start) {
                self.blank_line();
            }
            self.comments_above(stmt.span.start as usize);
            self.stmt(stmt, widths[i]);
        }
        self.leading_comments(block.span.end as usize);
        self.indent -= 1;
        let close = format!("{}}}", self.pad());
        self.out.push_str(&close);
    }

    /// `{ a = 1, b = 2 }` when the block was written on one line, holds only
    /// settings and no comments.
    fn inline_block(&self, block: &Block) -> Option<String> {
        if self.is_multiline(block.span) {
            return None;
        }
        if self.has_comment_in(block.span) {
            return None;
        }
        let mut parts = Vec::new();
        for stmt in &block.stmts {
            match &stmt.kind {
                StmtKind::Assign { key, value } if stmt.docs.is_empty() => {
                    parts.push(format!("{} = {}", key.name, self.flat(value)));
                }
                _ => return None,
            }
        }
        if parts.is_empty() {
            return Some("{}".to_string());
        }
        Some(format!("{{ {} }}", parts.join(", ")))
    }

    /// Whether a value is printed over several lines at column `col`.
    fn breaks(&self, e: &Expr, col: usize) -> bool {
        self.breakable(e) && (self.written_broken(e) || col + width(&self.flat(e)) > MAX_WIDTH)
    }

    /// Whether `e` can be printed over several lines: a non-empty list, a
    /// call with arguments, an `if`.
    fn breakable(&self, e: &Expr) -> bool {
        match &e.kind {
            ExprKind::List { items } => !items.is_empty(),
            ExprKind::Call { args, .. } => !args.is_empty(),
            ExprKind::If { .. } => true,
            _ => false,
        }
    }

    /// Whether the source writes `e` over several lines. For a call, only
    /// a line break between its brackets and arguments counts: one inside
    /// an argument (a list written over lines) leaves the call on one line.
    fn written_broken(&self, e: &Expr) -> bool {
        let ExprKind::Call { callee, args } = &e.kind else {
            return self.is_multiline(e.span);
        };
        self.breaks_between(
            callee.span.end as usize,
            args.iter().map(|a| a.span),
            e.span.end as usize,
        )
    }

    /// For each statement, the key width to pad to (aligned `=` within runs
    /// of consecutive settings printed on one line), or `None` for the
    /// statements outside such runs. The decision depends only on what is
    /// printed, never on the source layout of a one-line result, so that
    /// formatting is idempotent. A setting that fits in the line at its own
    /// key's width but not padded to its run's is left out of the run (it
    /// went past 100 columns).
    fn alignment(&self, block: &Block) -> Vec<Option<usize>> {
        let mut unaligned = vec![false; block.stmts.len()];
        loop {
            let widths = self.runs(block, &unaligned);
            let mut changed = false;
            for (i, stmt) in block.stmts.iter().enumerate() {
                let (Some(w), StmtKind::Assign { key, value }) = (widths[i], &stmt.kind) else {
                    continue;
                };
                let value_width = width(&self.flat(value));
                let at = |key_width: usize| 2 * self.indent + key_width + 3 + value_width;
                if at(w) > MAX_WIDTH && at(key.name.len()) <= MAX_WIDTH {
                    unaligned[i] = true;
                    changed = true;
                }
            }
            // Each round only takes settings out, so it ends.
            if !changed {
                return widths;
            }
        }
    }

    /// The runs of [`Self::alignment`], with the `unaligned` settings kept
    /// out of them.
    fn runs(&self, block: &Block, unaligned: &[bool]) -> Vec<Option<usize>> {
        let mut widths = vec![None; block.stmts.len()];
        let mut run: Vec<usize> = Vec::new();
        let flush = |run: &mut Vec<usize>, widths: &mut Vec<Option<usize>>| {
            let w = run
                .iter()
                .filter_map(|&i| match &block.stmts[i].kind {
                    StmtKind::Assign { key, .. } => Some(key.name.len()),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            for &i in run.iter() {
                widths[i] = Some(w);
            }
            run.clear();
        };
        for (i, stmt) in block.stmts.iter().enumerate() {
            let col = 2 * self.indent;
            let simple = match &stmt.kind {
                StmtKind::Assign { key, value } => {
                    !unaligned[i] && !self.breaks(value, col + key.name.len() + 3)
                }
                _ => false,
            };
            // A blank line right before a statement (the one the printer
            // keeps) or a comment line between two statements starts a new
            // group, and so does a comment inside the statement, which is
            // printed on its own line above it. (Only what lies between two
            // statements and commas: the first line's rest is the previous
            // statement's trailing comment.)
            let starts_group = i > 0 && {
                let start = stmt.span.start as usize;
                let prev_end = block.stmts[i - 1].span.end as usize;
                let between = self.source_between(prev_end, start);
                self.blank_before(start)
                    || between
                        .lines()
                        .skip(1)
                        .any(|l| l.trim_start_matches([' ', '\t', ',']).starts_with('#'))
                    || self.has_comment_in(stmt.span)
            };
            if !simple || starts_group {
                flush(&mut run, &mut widths);
            }
            if simple {
                run.push(i);
            }
        }
        flush(&mut run, &mut widths);
        widths
    }

    fn stmt(&mut self, stmt: &Stmt, key_width: Option<usize>) {
        let line_start = self.out.len();
        let pad = self.pad();
        self.out.push_str(&pad);
        let col = pad.len();
        match &stmt.kind {
            StmtKind::Assign { key, value } => {
                let width = key_width.unwrap_or(0).max(key.name.len());
                let head = format!("{:width$} = ", key.name);
                self.out.push_str(&head);
                let v = match key_width {
                    Some(_) => self.flat(value),
                    None => self.expr(value, col + head.len()),
                };
                self.out.push_str(&v);
            }
            StmtKind::Block { key, body } => {
                self.out.push_str(&key.name);
                self.block(body, true);
            }
            StmtKind::Filter { cond } => {
                self.out.push_str("filter ");
                let v = self.expr(cond, col + 7);
                self.out.push_str(&v);
            }
            StmtKind::Criterion {
                name,
                weight,
                description,
                body,
            } => {
                let mut line = format!("criterion {}", name.name);
                if let Some(w) = weight {
                    line.push_str(" weight ");
                    line.push_str(&self.flat(w));
                }
                if let Some(d) = description {
                    line.push(' ');
                    line.push_str(&self.string(d));
                }
                self.out.push_str(&line);
                if let Some(b) = body {
                    self.block(b, true);
                }
            }
            StmtKind::Penalty { name, value, when } => {
                let mut line = format!("penalty {} = {}", name.name, self.flat(value));
                if let Some(w) = when {
                    line.push_str(" when ");
                    line.push_str(&self.flat(w));
                }
                self.out.push_str(&line);
            }
            StmtKind::Format { name, weight } => {
                let mut line = format!("format {}", name.name);
                if let Some(w) = weight {
                    line.push_str(" weight ");
                    line.push_str(&self.flat(w));
                }
                self.out.push_str(&line);
            }
        }
        self.trailing_comments(stmt.span.end as usize, line_start);
    }

    // ------------------------------------------------------------ expressions

    fn string(&self, s: &StringLit) -> String {
        if s.triple {
            format!("\"\"\"{}\"\"\"", s.value)
        } else {
            format!("\"{}\"", escape(&s.value))
        }
    }

    /// An expression at column `col`, broken over lines where it was written
    /// so or does not fit.
    fn expr(&mut self, e: &Expr, col: usize) -> String {
        if !self.breaks(e, col) {
            return self.flat(e);
        }
        match &e.kind {
            ExprKind::List { items } => self.broken_list(items, e.span),
            ExprKind::Call { callee, args } => self.broken_call(callee, args, e.span),
            _ => self.broken_if(e),
        }
    }

    /// `callee(`, one argument per line with a trailing comma, `)`; the
    /// comments between the arguments stay with them.
    fn broken_call(&mut self, callee: &Expr, args: &[Arg], span: Span) -> String {
        let elements: Vec<(Span, String, Element<'_>)> = args
            .iter()
            .map(|a| {
                let name = a
                    .name
                    .as_ref()
                    .map_or(String::new(), |n| format!("{} = ", n.name));
                (a.span, name, Element::Expr(&a.value))
            })
            .collect();
        // The closing `)` is the span's last byte.
        let close = (span.end as usize).saturating_sub(1);
        format!(
            "{}({}",
            self.flat(callee),
            self.one_per_line(&elements, close, ')')
        )
    }

    fn broken_list(&mut self, items: &[Expr], span: Span) -> String {
        let elements: Vec<(Span, String, Element<'_>)> = items
            .iter()
            .map(|e| (e.span, String::new(), Element::Expr(e)))
            .collect();
        let close = (span.end as usize).saturating_sub(1);
        format!("[{}", self.one_per_line(&elements, close, ']'))
    }

    /// The elements of a list, call or parameter list one per line ([`Self::element`]),
    /// indented a step: from the line break after the opening bracket to
    /// the `closing` bracket, which lies at `close` in the source; the
    /// comments before it are printed above it.
    fn one_per_line(
        &mut self,
        elements: &[(Span, String, Element<'_>)],
        close: usize,
        closing: char,
    ) -> String {
        let mut s = String::from("\n");
        self.indent += 1;
        for (i, (span, prefix, element)) in elements.iter().enumerate() {
            let next = elements.get(i + 1).map_or(close, |e| e.0.start as usize);
            s.push_str(&self.element(*span, next, prefix, *element));
        }
        s.push_str(&self.comments_into(close));
        self.indent -= 1;
        s.push_str(&self.pad());
        s.push(closing);
        s
    }

    /// One element of a list, call or parameter list printed one per line,
    /// at the current indent: the comments before it, and those inside it
    /// when it prints on one line, on lines of their own above it; then
    /// `prefix` (a named argument's `name = `) and the element, a comma,
    /// and the comment that follows it on its source line before `next`
    /// (the next element's start, or the closing bracket).
    fn element(&mut self, span: Span, next: usize, prefix: &str, element: Element<'_>) -> String {
        let mut s = self.comments_into(span.start as usize);
        let line = format!("{}{prefix}", self.pad());
        let col = width(&line);
        let text = match element {
            Element::Expr(e) if self.breaks(e, col) => self.expr(e, col),
            Element::Expr(e) => {
                s.push_str(&self.comments_into(span.end as usize));
                self.flat(e)
            }
            Element::Text(text) => {
                s.push_str(&self.comments_into(span.end as usize));
                text.to_string()
            }
        };
        s.push_str(&line);
        s.push_str(&text);
        s.push(',');
        s.push_str(&self.same_line_comment(span.end as usize, next));
        s.push('\n');
        s
    }

    /// Comments before `pos` rendered as own lines (for broken lists).
    fn comments_into(&mut self, pos: usize) -> String {
        let mut s = String::new();
        while let Some(c) = self.comments.get(self.next_comment) {
            if c.span.start as usize >= pos {
                break;
            }
            s.push_str(&self.pad());
            s.push_str(&c.text);
            s.push('\n');
            self.next_comment += 1;
        }
        s
    }

    /// A comment after `end` on the same source line, before `limit`.
    fn same_line_comment(&mut self, end: usize, limit: usize) -> String {
        // Skip the separating comma in the source.
        if let Some(c) = self.comments.get(self.next_comment) {
            let start = c.span.start as usize;
            if start < limit && !self.source_between(end, start).contains('\n') {
                self.next_comment += 1;
                return format!("{}{}", self.before_trailing_comment(), c.text);
            }
        }
        String::new()
    }

    fn broken_if(&mut self, e: &Expr) -> String {
        let mut s = String::new();
        let mut cur = e;
        let mut first = true;
        loop {
            match &cur.kind {
                ExprKind::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    if !first {
                        s.push_str(" else ");
                    }
                    first = false;
                    s.push_str("if ");
                    s.push_str(&self.flat(cond));
                    s.push(' ');
                    s.push_str(&self.braced_body(then));
                    cur = otherwise;
                }
                _ => {
                    s.push_str(" else ");
                    s.push_str(&self.braced_body(cur));
                    return s;
                }
            }
        }
    }

    /// `{`, the expression on its own indented line, `}`.
    fn braced_body(&mut self, e: &Expr) -> String {
        self.indent += 1;
        let pad = self.pad();
        let body = self.expr(e, pad.len());
        self.indent -= 1;
        format!("{{\n{pad}{body}\n{}}}", self.pad())
    }

    /// The one-line form of an expression.
    fn flat(&self, e: &Expr) -> String {
        let mut s = String::new();
        self.flat_into(e, &mut s);
        s
    }

    fn flat_into(&self, e: &Expr, s: &mut String) {
        match &e.kind {
            ExprKind::Number(n) => s.push_str(&n.text),
            ExprKind::Quantity { value, unit } => {
                s.push_str(&value.text);
                s.push(' ');
                s.push_str(if value.value == 1.0 {
                    unit.singular()
                } else {
                    unit.plural()
                });
            }
            ExprKind::String(lit) => s.push_str(&self.string(lit)),
            ExprKind::Bool { value } => s.push_str(if *value { "true" } else { "false" }),
            ExprKind::Name { name } => s.push_str(name),
            ExprKind::List { items } => {
                s.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    self.flat_into(item, s);
                }
                s.push(']');
            }
            ExprKind::Paren { inner } => {
                s.push('(');
                self.flat_into(inner, s);
                s.push(')');
            }
            ExprKind::Field { base, name } => {
                self.flat_into(base, s);
                s.push('.');
                s.push_str(&name.name);
            }
            ExprKind::Index { base, index } => {
                self.flat_into(base, s);
                s.push('[');
                self.flat_into(index, s);
                s.push(']');
            }
            ExprKind::Call { callee, args } => {
                self.flat_into(callee, s);
                s.push('(');
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    if let Some(name) = &arg.name {
                        s.push_str(&name.name);
                        s.push_str(" = ");
                    }
                    self.flat_into(&arg.value, s);
                }
                s.push(')');
            }
            ExprKind::Unary { op, operand } => {
                s.push_str(op.symbol());
                if *op == UnaryOp::Not {
                    s.push(' ');
                }
                self.flat_into(operand, s);
            }
            ExprKind::Binary { op, lhs, rhs } => {
                self.flat_into(lhs, s);
                if *op == BinaryOp::Range {
                    s.push_str("..");
                } else {
                    s.push(' ');
                    s.push_str(op.symbol());
                    s.push(' ');
                }
                self.flat_into(rhs, s);
            }
            ExprKind::If {
                cond,
                then,
                otherwise,
            } => {
                s.push_str("if ");
                self.flat_into(cond, s);
                s.push_str(" { ");
                self.flat_into(then, s);
                s.push_str(" } else ");
                if matches!(otherwise.kind, ExprKind::If { .. }) {
                    self.flat_into(otherwise, s);
                } else {
                    s.push_str("{ ");
                    self.flat_into(otherwise, s);
                    s.push_str(" }");
                }
            }
        }
    }
}

/// The start of the `##` lines that end right before `line_start` in
/// `out` (the documentation of the line there), or `line_start`.
fn doc_lines_start(out: &str, line_start: usize) -> usize {
    let mut at = line_start;
    while at > 0 {
        let Some(before) = out.get(..at - 1) else {
            break;
        };
        let previous = before.rfind('\n').map_or(0, |i| i + 1);
        if out
            .get(previous..at)
            .is_some_and(|l| l.trim_start().starts_with("##"))
        {
            at = previous;
        } else {
            break;
        }
    }
    at
}
