(comment) @comment

(declaration_keyword) @keyword
(declaration name: (identifier) @type)
["use" "as"] @keyword.import
["filter" "criterion" "penalty" "format" "weight" "when"] @keyword
["if" "else"] @keyword.conditional
["and" "or" "not" "in"] @keyword.operator
["==" "!=" "<" "<=" ">" ">=" ".." "+" "-" "*" "/" "%" "="] @operator
["{" "}" "[" "]" "(" ")"] @punctuation.bracket
["," "." ":"] @punctuation.delimiter

(criterion name: (identifier) @function)
(penalty name: (identifier) @function)
(format_term name: (identifier) @function)
(key) @property
(parameter name: (identifier) @variable.parameter)
(argument name: (identifier) @variable.parameter)
(call function: (name (identifier) @function.call))
(field_access field: (identifier) @property)

(number) @number
(quantity) @number
(boolean) @boolean
(string) @string
(escape_sequence) @string.escape
(name (identifier) @variable)
