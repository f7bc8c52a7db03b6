//! What a word of the document names besides a declaration or a rubric
//! criterion, for hover and go-to-definition: a parameter of the head of
//! the declaration around it (`threshold` in a rubric's `total`), a
//! dataset's split (`train` of `qi_safe.train`), the alias of a `use`
//! (`rollouts` of `rollouts.tiny_cpu`); and the rubric of the stage
//! around a setting that names one of its criteria (`cost { criterion }`).

use super::Document;
use crate::semantic::hir::Decl;
use crate::semantic::schema::Ty;
use crate::span::Span;
use crate::syntax::ast::{self, DeclBody, DeclKind, StmtKind};

/// One of the things [`Document::named`] finds.
pub(super) enum Named<'a> {
    /// A parameter of the head of the declaration `decl` (of this document).
    Param {
        decl: &'a ast::Decl,
        param: &'a ast::Param,
    },
    /// Split `split` of dataset `dataset`, with its statement (its span
    /// and text) when the dataset's file has one (`split { train = 0.9 }`).
    Split {
        dataset: &'a Decl,
        split: String,
        statement: Option<(Span, String)>,
    },
    /// The alias of this document's `use` item.
    Alias { item: &'a ast::Use },
    /// The key of a named argument (`max` of `length(max = 200)`): the
    /// called declaration's parameter of that name, when there is one.
    Argument {
        callee: Option<&'a Decl>,
        param: Option<&'a crate::semantic::hir::Param>,
    },
}

impl Document {
    /// What `word` (with `qualifier` before its dot, at `span`) names, if
    /// it is one of [`Named`]'s kinds.
    pub(super) fn named(
        &self,
        word: &str,
        qualifier: Option<&str>,
        span: Span,
    ) -> Option<Named<'_>> {
        if let Some((callee, callee_qualifier)) = self.argument_key_call(span) {
            let callee = self.decl_named(&callee, callee_qualifier.as_deref());
            let param = callee.and_then(|d| d.params.iter().find(|p| p.name == word));
            return Some(Named::Argument { callee, param });
        }
        match qualifier {
            Some(q) => self.split_named(q, word),
            None => {
                // `rollouts.` names the import where an alias is called so;
                // the alias in its own `use` item too.
                let before_dot = self.text[span.end as usize..].starts_with('.');
                let alias = self.alias_named(word).filter(|item| {
                    before_dot || item.alias.as_ref().is_some_and(|a| a.span == span)
                });
                match alias {
                    Some(item) => Some(Named::Alias { item }),
                    None => self.param_named(word, span.start as usize),
                }
            }
        }
    }

    /// The callee (its name, and the alias before its dot) of the call
    /// whose named argument's key lies at `span`.
    fn argument_key_call(&self, span: Span) -> Option<(String, Option<String>)> {
        let decl = self.decl_around(span.start as usize)?;
        let mut found = None;
        decl.visit_exprs(&mut |e| {
            if let ast::ExprKind::Call { callee, args } = &e.kind {
                if args
                    .iter()
                    .any(|a| a.name.as_ref().is_some_and(|n| n.span == span))
                {
                    found = Some(match &callee.kind {
                        ast::ExprKind::Name { name } => (name.clone(), None),
                        ast::ExprKind::Field { base, name } => match &base.kind {
                            ast::ExprKind::Name { name: alias } => {
                                (name.name.clone(), Some(alias.clone()))
                            }
                            _ => (name.name.clone(), None),
                        },
                        _ => (String::new(), None),
                    });
                }
            }
        });
        found
    }

    /// The `use ... as word` item of this document.
    pub(super) fn alias_named(&self, word: &str) -> Option<&ast::Use> {
        self.ast.as_ref()?.items.iter().find_map(|i| match &i.kind {
            ast::ItemKind::Use(u) if u.alias.as_ref().is_some_and(|a| a.name == word) => Some(u),
            _ => None,
        })
    }

    /// A parameter called `word` of the head of this document's
    /// declaration around `offset` (not a key of its settings).
    fn param_named(&self, word: &str, offset: usize) -> Option<Named<'_>> {
        if matches!(self.block_at(offset), Some((_, _, Some(key))) if key == word) {
            return None;
        }
        let decl = self.decl_around(offset)?;
        let param = decl.params.as_ref()?.iter().find(|p| p.name.name == word)?;
        Some(Named::Param { decl, param })
    }

    /// Split `split` of the dataset called `dataset`.
    fn split_named(&self, dataset: &str, split: &str) -> Option<Named<'_>> {
        let decl = self.decl_named(dataset, None)?;
        if decl.kind != DeclKind::Dataset || !decl.settings.block("split")?.0.contains_key(split) {
            return None;
        }
        Some(Named::Split {
            dataset: decl,
            split: split.to_string(),
            statement: self.split_statement(decl, split),
        })
    }

    /// The `split { NAME = ... }` statement of a dataset, read from the
    /// tree of the file that declares it (this document's, else the
    /// loaded file parsed again).
    fn split_statement(&self, dataset: &Decl, split: &str) -> Option<(Span, String)> {
        let source = dataset.span.source;
        let file = self.file(source)?;
        let parsed;
        let module = match source == self.id {
            true => self.ast.as_ref()?,
            false => {
                parsed = crate::syntax::parse(source, &file.text).ok()?;
                &parsed
            }
        };
        let block = module.items.iter().find_map(|item| match &item.kind {
            ast::ItemKind::Decl(ast::Decl {
                kind: DeclKind::Dataset,
                name,
                body: DeclBody::Block(block),
                ..
            }) if name.name == dataset.name => Some(block),
            _ => None,
        })?;
        let splits = block.stmts.iter().find_map(|s| match &s.kind {
            StmtKind::Block { key, body } if key.name == "split" => Some(body),
            _ => None,
        })?;
        let stmt = splits
            .stmts
            .iter()
            .find(|s| matches!(&s.kind, StmtKind::Assign { key, .. } if key.name == split))?;
        let text = file
            .text
            .get(stmt.span.start as usize..stmt.span.end as usize)?;
        Some((stmt.span, text.to_string()))
    }

    /// The rubric of the stage around `offset`, where the value under it
    /// names one of that rubric's criteria (`cost { criterion = harm }`):
    /// the rubric its `reward` names.
    pub(super) fn stage_rubric_at(&self, offset: usize) -> Option<&Decl> {
        let (block, _, _) = self.block_at(offset)?;
        let key = self.key_of_value_at(offset)?;
        if block.key(&key)?.ty != Ty::CriterionName {
            return None;
        }
        self.stage_rubric(offset)
    }

    /// The rubric the `reward` of this document's declaration around
    /// `offset` names.
    pub(super) fn stage_rubric(&self, offset: usize) -> Option<&Decl> {
        let name = &self.decl_around(offset)?.name.name;
        let program = self.analysis.program.as_ref()?;
        let stage = program
            .decls
            .iter()
            .find(|d| d.module == 0 && &d.name == name)?;
        let rubric = program.decls.get(stage.settings.reference("reward")?.0)?;
        (rubric.kind == DeclKind::Rubric).then_some(rubric)
    }
}
