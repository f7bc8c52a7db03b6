/**
 * tree-sitter grammar for .safer files (Neovim, Helix, Zed highlighting).
 * The pest grammar (grammar/safer.pest) is the source of truth; a test in
 * tests/tests/grammar_sync.rs keeps the keyword lists of both in sync.
 */

const PREC = {
  or: 1, and: 2, not: 3, compare: 4, range: 5, add: 6, mul: 7, unary: 8, postfix: 9,
};

const commaSep = (rule) => optional(seq(rule, repeat(seq(',', rule)), optional(',')));

// Words that are keywords in some places and ordinary names or keys in others.
const CONTEXTUAL = ['filter', 'criterion', 'penalty', 'format', 'weight', 'when', 'use', 'as',
  'model', 'judge', 'dataset', 'rubric', 'rollout', 'reflection', 'train', 'eval', 'prompt', 'scorer'];

module.exports = grammar({
  name: 'safer',

  extras: ($) => [/\s/, $.comment],

  word: ($) => $.identifier,

  rules: {
    source_file: ($) => repeat(choice($.use_declaration, $.declaration)),

    comment: (_) => token(seq('#', /.*/)),

    use_declaration: ($) => seq('use', field('path', $.string), optional(seq('as', field('alias', $.identifier)))),

    declaration: ($) => seq(
      field('kind', $.declaration_keyword),
      field('name', $.identifier),
      optional($.parameters),
      choice(field('body', $.block), seq('=', field('value', $._expression))),
    ),

    declaration_keyword: (_) => choice('model', 'judge', 'dataset', 'rubric', 'rollout', 'reflection', 'train', 'eval', 'prompt', 'scorer'),

    parameters: ($) => seq('(', commaSep($.parameter), ')'),
    parameter: ($) => seq(
      field('name', $.identifier),
      optional(seq(':', field('type', $.identifier))),
      optional(seq('=', field('default', $._expression))),
    ),

    block: ($) => seq('{', repeat(seq($._statement, optional(','))), '}'),

    _statement: ($) => choice($.setting, $.nested_block, $.filter, $.criterion, $.penalty, $.format_term),

    key: ($) => choice($.identifier, ...CONTEXTUAL),

    setting: ($) => seq(field('key', $.key), '=', field('value', $._expression)),
    nested_block: ($) => seq(field('key', $.key), $.block),
    filter: ($) => seq('filter', field('condition', $._expression)),
    criterion: ($) => prec.right(seq(
      'criterion',
      field('name', $.identifier),
      optional(seq('weight', field('weight', $._expression))),
      optional(field('description', $.string)),
      optional($.block),
    )),
    penalty: ($) => prec.right(seq(
      'penalty',
      field('name', $.identifier),
      '=',
      field('value', $._expression),
      optional(seq('when', field('condition', $._expression))),
    )),
    format_term: ($) => prec.right(seq('format', field('name', $.identifier), optional(seq('weight', field('weight', $._expression))))),

    _expression: ($) => choice(
      $.binary_expression,
      $.unary_expression,
      $.if_expression,
      $.call,
      $.field_access,
      $.index,
      $.list,
      $.parenthesized,
      $.quantity,
      $.number,
      $.string,
      $.boolean,
      $.name,
    ),

    name: ($) => choice($.identifier, ...CONTEXTUAL.map((w) => alias(w, $.identifier))),

    binary_expression: ($) => choice(
      prec.left(PREC.or, seq(field('left', $._expression), 'or', field('right', $._expression))),
      prec.left(PREC.and, seq(field('left', $._expression), 'and', field('right', $._expression))),
      prec.left(PREC.compare, seq(field('left', $._expression), choice('==', '!=', '<', '<=', '>', '>=', 'in', seq('not', 'in')), field('right', $._expression))),
      prec.left(PREC.range, seq(field('left', $._expression), '..', field('right', $._expression))),
      prec.left(PREC.add, seq(field('left', $._expression), choice('+', '-'), field('right', $._expression))),
      prec.left(PREC.mul, seq(field('left', $._expression), choice('*', '/', '%'), field('right', $._expression))),
    ),

    unary_expression: ($) => choice(
      prec(PREC.not, seq('not', field('operand', $._expression))),
      prec(PREC.unary, seq('-', field('operand', $._expression))),
    ),

    if_expression: ($) => prec.right(seq(
      'if', field('condition', $._expression),
      '{', field('then', $._expression), '}',
      'else',
      choice($.if_expression, seq('{', field('else', $._expression), '}')),
    )),

    call: ($) => prec(PREC.postfix, seq(field('function', $._expression), $.arguments)),
    arguments: ($) => seq('(', commaSep($.argument), ')'),
    argument: ($) => seq(optional(seq(field('name', $.identifier), '=')), field('value', $._expression)),
    field_access: ($) => prec(PREC.postfix, seq(field('object', $._expression), '.', field('field', choice($.identifier, ...CONTEXTUAL.map((w) => alias(w, $.identifier)))))),
    index: ($) => prec(PREC.postfix, seq(field('object', $._expression), '[', field('index', $._expression), ']')),
    list: ($) => seq('[', commaSep($._expression), ']'),
    parenthesized: ($) => seq('(', $._expression, ')'),

    // A unit must be on the number's line (as in the pest grammar), so a
    // quantity is one token: `16 prompts`; `prompt` after a line break starts
    // a declaration instead.
    quantity: (_) => token(prec(1, /[0-9][0-9_]*(\.[0-9][0-9_]*)?([eE][+-]?[0-9]+)?[ \t]+(prompts|prompt|completions|completion|tokens|token|steps|step|epochs|epoch)/)),
    number: (_) => /[0-9][0-9_]*(\.[0-9][0-9_]*)?([eE][+-]?[0-9]+)?/,
    boolean: (_) => choice('true', 'false'),

    string: ($) => choice(
      seq('"""', optional($.text), '"""'),
      seq('"', repeat(choice($.string_content, $.escape_sequence)), '"'),
    ),
    text: (_) => repeat1(choice(/[^"]+/, /"[^"]/, /""[^"]/)),
    string_content: (_) => token.immediate(prec(1, /[^"\\\n]+/)),
    escape_sequence: (_) => token.immediate(seq('\\', choice(/[\\"ntr0]/, /u\{[0-9A-Fa-f]{1,6}\}/))),

    identifier: (_) => /[A-Za-z_][A-Za-z0-9_]*/,
  },
});
