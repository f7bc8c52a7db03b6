//! From pest pairs to the AST.
//!
//! The grammar guarantees the shape of every pair, so a missing child is an
//! internal error (reported as a diagnostic, never a panic). Doc comments
//! are attached here: the `##` lines directly above an item or statement,
//! with nothing but whitespace between them.

use super::ast::*;
use super::expr::{self, ExprBuilder};
use super::grammar::Rule;
use super::lexer;
use crate::diagnostic::{Code, Diagnostic};
use crate::span::{SourceId, Span};
use pest::iterators::{Pair, Pairs};

/// The result type of the builder.
pub type BuildResult<T> = Result<T, Box<Diagnostic>>;

/// Shared state while building one file.
pub struct Builder<'t> {
    pub(crate) source: SourceId,
    /// The whole file.
    pub(crate) text: &'t str,
    /// Where the parsed piece starts in `text` (pest positions are relative
    /// to the piece it was given).
    offset: usize,
    comments: &'t [Comment],
}

/// Builds the module from the pairs of `Rule::file` over the whole text.
///
/// # Errors
/// Errors the grammar cannot express: invalid numbers (E0108), chained
/// comparisons (E0110), expressions nested too deep (E0105).
pub fn module(
    source: SourceId,
    text: &str,
    pairs: Pairs<'_, Rule>,
    comments: Vec<Comment>,
) -> BuildResult<Module> {
    let items = items(source, text, 0, pairs, &comments)?;
    Ok(Module {
        items,
        comments,
        span: Span::new(source, 0, text.len()),
    })
}

/// Builds the items of one piece of `text`, the one starting at byte
/// `offset` that pest parsed as a `Rule::file` on its own.
///
/// # Errors
/// As [`module`].
pub fn items(
    source: SourceId,
    text: &str,
    offset: usize,
    mut pairs: Pairs<'_, Rule>,
    comments: &[Comment],
) -> BuildResult<Vec<Item>> {
    let b = Builder {
        source,
        text,
        offset,
        comments,
    };
    let file = pairs
        .next()
        .ok_or_else(|| internal(source, "empty parse result"))?;
    let mut items = Vec::new();
    for pair in file.into_inner() {
        match pair.as_rule() {
            Rule::use_decl => items.push(b.use_decl(pair)?),
            Rule::decl => items.push(b.decl(pair)?),
            _ => {}
        }
    }
    Ok(items)
}

pub(crate) fn internal(source: SourceId, what: &str) -> Box<Diagnostic> {
    Box::new(
        Diagnostic::error(Code::E0101, format!("internal compiler error: {what}"))
            .with_primary(Span::new(source, 0, 0), "")
            .with_help(
                "please report this at https://github.com/saferc/saferc/issues with the file",
            ),
    )
}

impl<'t> Builder<'t> {
    /// The span of a pair without the whitespace and comments that pest
    /// includes after a trailing `?` or `*` element.
    pub(crate) fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let s = pair.as_span();
        let start = s.start() + self.offset;
        let bytes = self.text.as_bytes();
        let mut end = s.end() + self.offset;
        loop {
            while end > start && super::lexer::is_blank(bytes[end - 1]) {
                end -= 1;
            }
            let idx = self
                .comments
                .partition_point(|c| (c.span.end as usize) < end);
            match self.comments.get(idx) {
                Some(c) if c.span.end as usize == end && c.span.start as usize >= start => {
                    end = c.span.start as usize;
                }
                _ => break,
            }
        }
        Span::new(self.source, start, end)
    }

    pub(crate) fn missing(&self, what: &str) -> Box<Diagnostic> {
        internal(self.source, &format!("malformed parse tree ({what})"))
    }

    /// The `##` lines that end right above `start`.
    fn docs_before(&self, start: usize) -> Vec<String> {
        super::docs::documenting(self.text, self.comments, start)
            .map(|i| {
                let line = self.comments[i].text.trim_start_matches("##");
                line.strip_prefix(' ').unwrap_or(line).to_string()
            })
            .collect()
    }

    fn ident(&self, pair: Pair<'_, Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn use_decl(&self, pair: Pair<'_, Rule>) -> BuildResult<Item> {
        let span = self.span(&pair);
        let mut path = None;
        let mut alias = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::string => path = Some(self.string(p)?),
                Rule::ident => alias = Some(self.ident(p)),
                _ => {}
            }
        }
        Ok(Item {
            docs: self.docs_before(span.start as usize),
            kind: ItemKind::Use(Use {
                path: path.ok_or_else(|| self.missing("use path"))?,
                alias,
            }),
            span,
        })
    }

    fn decl(&self, pair: Pair<'_, Rule>) -> BuildResult<Item> {
        let span = self.span(&pair);
        let mut kind = None;
        let mut name = None;
        let mut params = None;
        let mut body = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::decl_kind => {
                    kind = DeclKind::from_keyword(p.as_str()).map(|k| (k, self.span(&p)));
                }
                Rule::ident => name = Some(self.ident(p)),
                Rule::params => params = Some(self.params(p)?),
                Rule::block => body = Some(DeclBody::Block(self.block(p)?)),
                Rule::expr => body = Some(DeclBody::Value(self.expr(p)?)),
                _ => {}
            }
        }
        let (kind, kind_span) = kind.ok_or_else(|| self.missing("declaration keyword"))?;
        Ok(Item {
            docs: self.docs_before(span.start as usize),
            kind: ItemKind::Decl(Decl {
                kind,
                kind_span,
                name: name.ok_or_else(|| self.missing("declaration name"))?,
                params,
                body: body.ok_or_else(|| self.missing("declaration body"))?,
            }),
            span,
        })
    }

    fn params(&self, pair: Pair<'_, Rule>) -> BuildResult<Vec<Param>> {
        let mut out = Vec::new();
        for p in pair.into_inner().filter(|p| p.as_rule() == Rule::param) {
            let span = self.span(&p);
            let mut name = None;
            let mut ty = None;
            let mut default = None;
            for q in p.into_inner() {
                match q.as_rule() {
                    Rule::ident => name = Some(self.ident(q)),
                    Rule::type_name => ty = Some(self.ident(q)),
                    Rule::expr => default = Some(self.expr(q)?),
                    _ => {}
                }
            }
            out.push(Param {
                name: name.ok_or_else(|| self.missing("parameter name"))?,
                ty,
                default,
                span,
            });
        }
        Ok(out)
    }

    pub(crate) fn block(&self, pair: Pair<'_, Rule>) -> BuildResult<Block> {
        let span = self.span(&pair);
        let mut stmts = Vec::new();
        for p in pair.into_inner() {
            let kind = match p.as_rule() {
                Rule::assign_stmt
                | Rule::block_stmt
                | Rule::filter_stmt
                | Rule::criterion_stmt
                | Rule::penalty_stmt
                | Rule::format_stmt => p.as_rule(),
                _ => continue,
            };
            let span = self.span(&p);
            let docs = self.docs_before(span.start as usize);
            let stmt_kind = self.stmt(kind, p)?;
            stmts.push(Stmt {
                docs,
                kind: stmt_kind,
                span,
            });
        }
        Ok(Block { stmts, span })
    }

    fn stmt(&self, rule: Rule, pair: Pair<'_, Rule>) -> BuildResult<StmtKind> {
        let mut names = Vec::new();
        let mut exprs = Vec::new();
        let mut block = None;
        let mut string = None;
        let mut saw_weight = false;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::key | Rule::ident => names.push(self.ident(p)),
                Rule::expr => exprs.push(self.expr(p)?),
                Rule::block => block = Some(self.block(p)?),
                Rule::string => string = Some(self.string(p)?),
                Rule::kw_weight => saw_weight = true,
                _ => {}
            }
        }
        let mut exprs = exprs.into_iter();
        if rule == Rule::filter_stmt {
            return Ok(StmtKind::Filter {
                cond: exprs
                    .next()
                    .ok_or_else(|| self.missing("filter condition"))?,
            });
        }
        let name = names
            .into_iter()
            .next()
            .ok_or_else(|| self.missing("statement name"))?;
        Ok(match rule {
            Rule::assign_stmt => StmtKind::Assign {
                key: name,
                value: exprs.next().ok_or_else(|| self.missing("value"))?,
            },
            Rule::block_stmt => StmtKind::Block {
                key: name,
                body: block.ok_or_else(|| self.missing("block"))?,
            },
            Rule::criterion_stmt => StmtKind::Criterion {
                name,
                weight: if saw_weight { exprs.next() } else { None },
                description: string,
                body: block,
            },
            Rule::penalty_stmt => StmtKind::Penalty {
                name,
                value: exprs.next().ok_or_else(|| self.missing("penalty value"))?,
                when: exprs.next(),
            },
            Rule::format_stmt => StmtKind::Format {
                name,
                weight: if saw_weight { exprs.next() } else { None },
            },
            _ => return Err(self.missing("statement kind")),
        })
    }

    pub(crate) fn string(&self, pair: Pair<'_, Rule>) -> BuildResult<StringLit> {
        let span = self.span(&pair);
        let inner = pair
            .into_inner()
            .next()
            .ok_or_else(|| self.missing("string body"))?;
        let raw = inner.as_str();
        Ok(match inner.as_rule() {
            // A line break in the text is `\n` whatever the file's line
            // ends: a checkout with `\r\n` (git's `autocrlf` on Windows)
            // gives the model the same prompt, and `saferc fmt`, which
            // writes a file's line ends throughout, never changes it.
            Rule::triple_string => StringLit {
                value: raw
                    .get(3..raw.len().saturating_sub(3))
                    .unwrap_or("")
                    .replace("\r\n", "\n"),
                triple: true,
                span,
            },
            _ => StringLit {
                value: lexer::unescape(raw.get(1..raw.len().saturating_sub(1)).unwrap_or("")),
                triple: false,
                span,
            },
        })
    }

    pub(crate) fn expr(&self, pair: Pair<'_, Rule>) -> BuildResult<Expr> {
        ExprBuilder::new(self).build(pair).map(|(e, _)| e)
    }

    pub(crate) fn ident_of(&self, pair: Pair<'_, Rule>) -> Ident {
        self.ident(pair)
    }

    pub(crate) fn too_deep(&self, span: Span) -> Box<Diagnostic> {
        Box::new(
            Diagnostic::error(
                Code::E0105,
                format!(
                    "expression too deep: more than {} levels of nesting or chained operators",
                    expr::MAX_EXPR_DEPTH
                ),
            )
            .with_primary(
                Span::new(span.source, span.start as usize, span.start as usize + 1),
                "this expression goes too deep",
            )
            .with_help("split it into smaller expressions, or move parts into named declarations"),
        )
    }
}
