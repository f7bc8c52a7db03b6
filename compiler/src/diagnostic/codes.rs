//! The registry of diagnostic codes.
//!
//! Ranges: `E01xx` syntax, `E02xx` names and imports, `E03xx` types, units
//! and values, `E04xx` graph, `E05xx` runtime (data, weights, judges).
//! Every code has an explicit number and a page `docs/errors/E0xxx.md`
//! (a test checks both ways). A released code is never reused: retire it by
//! keeping its variant and page and saying so there.

use serde::{Serialize, Serializer};
use std::fmt;

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, $title:literal; )*) => {
        /// A stable diagnostic code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Code {
            $( $(#[$doc])* $name = $num, )*
        }

        impl Code {
            /// Every code, in numeric order.
            pub const ALL: &'static [Code] = &[ $( Code::$name, )* ];

            /// The code as written in messages and docs, e.g. `E0101`.
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$name => stringify!($name), )* }
            }

            /// A short title, used as the heading of the code's doc page.
            pub fn title(self) -> &'static str {
                match self { $( Code::$name => $title, )* }
            }
        }

        /// The documentation page of a code (`docs/errors/E0xxx.md`),
        /// embedded at build time: a code without a page does not compile.
        pub fn page(code: Code) -> &'static str {
            match code {
                $( Code::$name => include_str!(concat!("../../../docs/errors/", stringify!($name), ".md")), )*
            }
        }
    };
}

codes! {
    /// The file is not valid UTF-8.
    E0100 = 100, "source is not valid UTF-8";
    /// A token that the grammar does not allow here.
    E0101 = 101, "unexpected token";
    /// A string literal without its closing quote.
    E0102 = 102, "unterminated string";
    /// An opening bracket that is never closed.
    E0103 = 103, "unclosed delimiter";
    /// A closing bracket that does not match the open one.
    E0104 = 104, "mismatched closing delimiter";
    /// Brackets or expressions nested deeper than the compiler allows.
    E0105 = 105, "nesting too deep";
    /// A source file larger than the compiler reads.
    E0106 = 106, "source file too large";
    /// A backslash escape that strings do not support.
    E0107 = 107, "invalid escape sequence";
    /// A number that cannot be read (an overflow, a dangling exponent).
    E0108 = 108, "invalid number literal";
    /// A top-level word that is not a declaration keyword.
    E0109 = 109, "unknown declaration keyword";
    /// Comparisons chained as in `a < b < c`.
    E0110 = 110, "chained comparison or range";
    /// A source file that cannot be read from disk.
    E0111 = 111, "cannot read source file";
    /// An `if` expression without an `else` branch.
    E0112 = 112, "`if` without `else`";
    /// A setting written without `=`.
    E0113 = 113, "setting without `=`";
    /// A character that reorders how the text around it is displayed.
    E0114 = 114, "bidirectional control character";

    /// A `use` names a file or standard module that does not exist.
    E0200 = 200, "imported module not found";
    /// Modules import each other in a cycle.
    E0201 = 201, "import cycle";
    /// A `use` leaves the project root.
    E0202 = 202, "import outside the project root";
    /// A name that is not declared or imported.
    E0203 = 203, "unknown name";
    /// Two declarations with one name in a module.
    E0204 = 204, "duplicate declaration";
    /// A key that the block does not have.
    E0205 = 205, "unknown key";
    /// A key spelled as another tool (or an older saferc) spells it.
    E0206 = 206, "renamed key";
    /// A key that still works but will be removed.
    E0207 = 207, "deprecated key";
    /// A key set twice in one block.
    E0208 = 208, "duplicate key";
    /// A reference to the wrong kind of declaration.
    E0209 = 209, "wrong kind of declaration";
    /// A criterion that the rubric does not have.
    E0210 = 210, "unknown criterion";
    /// A required setting is missing.
    E0211 = 211, "missing setting";
    /// A field that the referenced thing does not have (a split, a criterion).
    E0212 = 212, "unknown field";
    /// A plain name that two modules imported without an alias declare differently.
    E0213 = 213, "ambiguous imported name";
    /// `safer.toml` is not valid TOML.
    E0220 = 220, "invalid manifest";
    /// A key that `safer.toml` does not have.
    E0221 = 221, "unknown manifest key";
    /// A `safer.toml` value of the wrong type, or a missing one.
    E0222 = 222, "invalid manifest value";
    /// A judge endpoint in `safer.toml` that is not a URL.
    E0223 = 223, "endpoint is not a URL";
    /// An import root outside the project while leaving is not allowed.
    E0224 = 224, "import root outside the project";
    /// A judge names an endpoint that `safer.toml` does not declare.
    E0225 = 225, "unknown judge endpoint";
    /// A pinned rubric whose content changed.
    E0226 = 226, "pinned rubric changed";

    /// A value of the wrong type.
    E0300 = 300, "type mismatch";
    /// A value outside the allowed range.
    E0301 = 301, "value out of range";
    /// A quantity in the wrong unit.
    E0302 = 302, "wrong unit";
    /// A name that is not one of the allowed values.
    E0303 = 303, "unknown value";
    /// Group-normalised advantages with fewer than 2 completions per group.
    E0304 = 304, "group too small";
    /// Batch sizes that do not divide.
    E0305 = 305, "batch arithmetic";
    /// A clip range that is reversed or outside (0, 1).
    E0306 = 306, "invalid clip range";
    /// A dual-clip constant of at most 1.
    E0307 = 307, "invalid dual-clip constant";
    /// A rubric whose criteria all have weight 0.
    E0308 = 308, "all weights zero";
    /// A criterion with a negative weight.
    E0309 = 309, "negative criterion weight";
    /// Dynamic sampling on a shaped total instead of a raw criterion (warning).
    E0310 = 310, "dynamic sampling on a shaped reward";
    /// Completions longer than the model's context.
    E0311 = 311, "longer than the model context";
    /// A KL estimator placed where it misbehaves (warning).
    E0312 = 312, "KL estimator and placement";
    /// A KL term without a reference model.
    E0313 = 313, "KL without a reference";
    /// Split fractions that do not sum to 1.
    E0314 = 314, "split fractions do not sum to 1";
    /// A curation box or band that keeps nothing.
    E0315 = 315, "empty selection";
    /// Division by zero in a constant expression.
    E0316 = 316, "division by zero";
    /// A setting that has no effect where it is written (warning).
    E0317 = 317, "setting without effect";
    /// A model folder whose `config.json` holds another architecture.
    E0318 = 318, "model folder disagrees with its `arch`";
    /// A training stage without exactly one algorithm block.
    E0319 = 319, "no algorithm";
    /// A split named `all`, the name of every row of a dataset.
    E0320 = 320, "reserved split name";
    /// A stage `after` one that trains another model.
    E0321 = 321, "stage continues another model";
    /// A reflection prompt that does not show the completion (warning).
    E0322 = 322, "reflection prompt without the completion";
    /// A penalty that adds to the reward (warning).
    E0323 = 323, "penalty of the wrong sign";
    /// A held-out split that the stage trains on (warning).
    E0324 = 324, "held-out split overlaps the training data";
    /// A dataset that no stage or evaluation reads (warning).
    E0325 = 325, "dataset never read";
    /// A criterion without a scorer in a rubric whose judge is `rules`.
    E0326 = 326, "criterion nobody scores";
    /// A reflection prompt with a placeholder other than `{completion}` (warning).
    E0327 = 327, "placeholder left as written";
    /// `judge.score` or `judge.flag` in a rubric whose judge is `rules`.
    E0328 = 328, "question for a judge that answers none";
    /// A `regex(...)` pattern that saferc's regex engine cannot read.
    E0329 = 329, "pattern that does not compile";
    /// `x in "text"`, a substring test written like a membership test (warning).
    E0330 = 330, "`in` a text is a substring test";
    /// A declaration no stage or evaluation reaches (warning).
    E0331 = 331, "declaration never used";
    /// A rollout's stop string or a reflection's prompt that holds a
    /// special token of the model it is given to.
    E0332 = 332, "special token in text for the model";

    /// Training stages ordered in a cycle (`after`).
    E0400 = 400, "cycle in the pipeline graph";
    /// An input of a graph node that nothing feeds.
    E0401 = 401, "dangling input";

    /// A NaN or infinity in rewards, log-probs or the loss at run time.
    E0500 = 500, "non-finite value in training";
    /// Training inputs whose shapes do not agree.
    E0501 = 501, "shape mismatch in training";
    /// Dynamic sampling kept too few groups after its resample cap.
    E0502 = 502, "dynamic sampling kept nothing";
    /// A training configuration the GRPO engine cannot use.
    E0503 = 503, "invalid training configuration";
}

impl Code {
    /// The numeric value (101 for `E0101`).
    pub fn number(self) -> u16 {
        self as u16
    }

    /// Where the code's documentation lives, relative to the repository.
    pub fn doc_path(self) -> String {
        format!("docs/errors/{}.md", self.as_str())
    }

    /// A link to the code's page in the repository.
    pub fn url(self) -> String {
        format!(
            "https://github.com/saferc/saferc/blob/main/{}",
            self.doc_path()
        )
    }

    /// Looks a code up by its name (`"E0101"`), for `saferc explain`.
    pub fn parse(name: &str) -> Option<Code> {
        let upper = name.trim().to_ascii_uppercase();
        Code::ALL.iter().copied().find(|c| c.as_str() == upper)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
