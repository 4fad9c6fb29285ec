"""KEDA's `advanced.scalingModifiers.formula`: a small, safe evaluator of expr-lang arithmetic.

KEDA evaluates the formula with the expr language (expr-lang/expr) over the metric values of the
triggers that have a `name`. This module parses the subset of that language a formula needs, with
expr's own precedence table, checks it once at load time, and evaluates the parsed tree. It never
calls eval or exec and imports nothing of the rest of the package. Pure: no I/O.

Grammar (precedence climbing; the numbers are expr's own, higher binds tighter):

    formula    = expression END
    expression = binary(0) [ "?" expression ":" expression ]   ternary, lowest, right-nested
    binary(p)  = unary { OP binary(q) }   for each OP of precedence >= p, q as below
    unary      = ("!" | "not") binary(50) | ("-" | "+") binary(90) | primary
    primary    = NUMBER | "true" | "false" | NAME | NAME "(" [ args ] ")"
               | "$env" "[" STRING "]" | "(" expression ")"
    args       = expression { "," expression } [ "," ]

    operator            precedence  associativity
    || or                       10  left
    && and                      15  left
    == != < <= > >=             20  chained: a < b < c is a < b && b < c
    + -                         30  left
    * / %                       60  left
    ** ^                       100  right: 2 ** 3 ** 2 is 2 ** 9
    ??                         500  left; not mixed with another operator without parentheses

As in expr, unary minus binds looser than `**` (`-2 ** 2` is -4) and tighter than `*`; `!`/`not`
bind tighter than comparisons and logic, so `not a > 1` is `(not a) > 1` (a type error: write
`not (a > 1)`), unlike Python.

Values: numbers are floats; comparisons and logic give booleans. Types are checked at compile time
as expr's checker does: arithmetic, ordering and functions need numbers, logic and the ternary's
condition need booleans, `==`/`!=`, the ternary's branches and `??`'s sides need one type, and the
whole formula must give a number (KEDA: "Formula must return a single value (not boolean)"; it
wraps the formula in float(), which rejects a boolean). Evaluation is lazy where expr's is: `&&`,
`||`, `?:` and `??` evaluate only the side they need, so `b > 0 ? a / b : 0` is safe.

Functions (expr's builtins of one number): abs, ceil, floor, round (half away from zero), float,
int (toward zero); of one or more numbers: min, max, mean, median.

Names: [A-Za-z_][A-Za-z0-9_]*, each a trigger `name` of the rule (an unknown one is an error with a
"did you mean"). A KEDA trigger name may contain "-", which expr reads as a minus, as we do:
`my-queue` is `my - queue`. Such a trigger is written `$env["my-queue"]`, expr's map of all
variables, and the unknown-name error for `my` says so.

A trigger missing from the values given to `evaluate` has no value (newer KEDA's `fallback.behavior:
scalingModifiers` passes a failed trigger so): `queue ?? 0` gives 0 then, and any other use of it is
an error. Division by zero, overflow and a non-real power are errors too, never a silent
NaN or infinity: the caller treats an error as a failed reading, not as a zero.

Where we differ from expr: `%` works on any numbers (math.fmod, the sign of the dividend, as Go's
integer %), where expr allows it on integers only, so KEDA rejects `trigger % 2`. Strings (but the
one of `$env`), arrays, maps, members, pipes, comments, `let`, `if`, `in`, `nil` and other builtins
are refused with a clear error. Names are ASCII only. Positions are 1-based character offsets in
the formula (a newline counts as one character), shown as "column N".
"""

from __future__ import annotations

import difflib
import math
import re
import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

MAX_FORMULA_LENGTH = 1_000
MAX_DEPTH = 64  # nesting of parentheses, operators and calls; keeps recursion far from Python's

NUMBER = "number"
BOOLEAN = "boolean"

TERNARY_PRECEDENCE = 0
COMPARISON_PRECEDENCE = 20
BINARY_PRECEDENCE: dict[str, tuple[int, bool]] = {  # operator: (precedence, right-associative)
    "||": (10, False),
    "or": (10, False),
    "&&": (15, False),
    "and": (15, False),
    "==": (20, False),
    "!=": (20, False),
    "<": (20, False),
    "<=": (20, False),
    ">": (20, False),
    ">=": (20, False),
    "+": (30, False),
    "-": (30, False),
    "*": (60, False),
    "/": (60, False),
    "%": (60, False),
    "**": (100, True),
    "^": (100, True),
    "??": (500, False),
}
UNARY_PRECEDENCE = {"!": 50, "not": 50, "-": 90, "+": 90}
WORD_OPERATORS = frozenset({"and", "or", "not"})
RESERVED_WORDS = {  # expr's keywords that this subset refuses, with what to write instead
    "nil": "'nil' is not supported: trigger values are numbers (use `name ?? 0` for a default)",
    "if": "'if' is not supported: write condition ? a : b",
    "else": "'else' is not supported: write condition ? a : b",
    "let": "'let' is not supported in a formula",
} | {
    word: f"operator '{word}' is not supported: a formula works on numbers"
    for word in ("in", "matches", "contains", "startsWith", "endsWith")
}

# Longest first, so "**" is not read as two "*".
SYMBOLS: tuple[str, ...] = ("**", "==", "!=", "<=", ">=", "&&", "||", "??", *"+-*/%^<>!?:(),[]")
LONE_SYMBOL_HINTS = {
    "=": "unexpected '=': to compare, write '=='",
    "&": "unexpected '&': write '&&' (or 'and')",
    "|": "unexpected '|': write '||' (or 'or'); expr's pipe is not supported",
}

_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F_]*|0[oO][0-7_]*|0[bB][01_]*"
    r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9_]*)?"
)
_WORD = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_]*")
_WORD_TAIL = re.compile(r"[A-Za-z0-9_]*")
_DASHED_NAME = re.compile(r"[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)+")


class FormulaError(ValueError):
    """A formula that does not compile or evaluate, with the 1-based column of the problem."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message, position)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        return f"{self.message} (at column {self.position})"


# ---------------------------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True)
class Token:
    """One lexical token: kind is number, name, string, op or end; position is 1-based."""

    kind: str
    text: str
    position: int


def tokenize(text: str) -> list[Token]:
    """The tokens of a formula, ending with an `end` token one past the last character."""
    tokens: list[Token] = []
    index = 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        token = _read_token(text, index)
        tokens.append(token)
        index += len(token.text)
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


def _read_token(text: str, index: int) -> Token:
    """The token that starts at `index` (not a space)."""
    position = index + 1
    if match := _NUMBER.match(text, index):
        return _number_token(text, match.group(), position)
    if match := _WORD.match(text, index):
        return _word_token(match.group(), position)
    if text[index] in "\"'":
        return _string_token(text, index)
    for symbol in SYMBOLS:
        if text.startswith(symbol, index):
            return Token("op", symbol, position)
    char = text[index]
    raise FormulaError(LONE_SYMBOL_HINTS.get(char, f"unexpected character {char!r}"), position)


def _number_token(text: str, number: str, position: int) -> Token:
    """A number token; a number run into letters (12ab, 0x1g, 1e) is a bad token."""
    tail = _WORD_TAIL.match(text, position - 1 + len(number))
    if tail and tail.group():
        raise FormulaError(f"bad number '{number}{tail.group()}'", position)
    return Token("number", number, position)


def _word_token(word: str, position: int) -> Token:
    """A name, `$env`, or one of the word operators and, or, not."""
    if word in RESERVED_WORDS:
        raise FormulaError(RESERVED_WORDS[word], position)
    if word.startswith("$") and word != "$env":
        raise FormulaError(f"unexpected '{word}': the only $ name is $env", position)
    return Token("op" if word in WORD_OPERATORS else "name", word, position)


def _string_token(text: str, index: int) -> Token:
    """A quoted string (only valid in $env["name"]), without escapes."""
    quote = text[index]
    end = text.find(quote, index + 1)
    if end < 0:
        raise FormulaError("string is never closed", index + 1)
    raw = text[index : end + 1]
    if "\\" in raw:
        raise FormulaError("escapes (\\) are not supported in a string", index + 1)
    return Token("string", raw, index + 1)


def number_value(token: Token) -> float:
    """The value of a number token: decimal, exponent, 0x / 0o / 0b, with `_` separators."""
    digits = token.text.replace("_", "")
    try:
        based = digits[:2].lower() in ("0x", "0o", "0b")
        value = float(int(digits, 0)) if based else float(digits)
    except (ValueError, OverflowError):
        raise FormulaError(f"bad number '{token.text}'", token.position) from None
    if not math.isfinite(value):
        raise FormulaError(f"number '{token.text}' is too large", token.position)
    return value


# ---------------------------------------------------------------------------------------------
# The tree: each node knows its static type (kind), its position and its depth.


@dataclass(frozen=True)
class Missing:
    """The value of a trigger that has none on this evaluation: only `??` accepts it."""

    trigger: str
    position: int


Value = float | bool | Missing


@dataclass(frozen=True)
class Node:
    """A node of a compiled formula."""

    kind: str
    position: int
    depth: int

    def evaluate(self, values: Mapping[str, float]) -> Value:
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Node):
    value: float | bool

    def evaluate(self, values: Mapping[str, float]) -> Value:
        return self.value


@dataclass(frozen=True)
class Trigger(Node):
    name: str

    def evaluate(self, values: Mapping[str, float]) -> Value:
        raw = values.get(self.name)
        if raw is None:
            return Missing(self.name, self.position)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            message = f"trigger '{self.name}' is not a number: {raw!r}"
            raise FormulaError(message, self.position) from None
        if not math.isfinite(value):
            raise FormulaError(
                f"trigger '{self.name}' is not a finite number: {raw!r}", self.position
            )
        return value


def operand(node: Node, values: Mapping[str, float]) -> float | bool:
    """The value of `node`, which must have one (only `??` accepts a trigger without a value)."""
    value = node.evaluate(values)
    if isinstance(value, Missing):
        message = (
            f"no value for trigger '{value.trigger}' (write `{value.trigger} ?? 0` for a default)"
        )
        raise FormulaError(message, value.position)
    return value


@dataclass(frozen=True)
class Unary(Node):
    operator: str
    operand: Node

    def evaluate(self, values: Mapping[str, float]) -> Value:
        value = operand(self.operand, values)
        if self.operator == "-":
            return -value
        if self.operator == "+":
            return value
        return not value


def _divide(left: float, right: float, position: int) -> float:
    if right == 0:
        raise FormulaError("division by zero", position)
    return left / right


def _modulo(left: float, right: float, position: int) -> float:
    if right == 0:
        raise FormulaError("modulo by zero", position)
    return math.fmod(left, right)


def _power(left: float, right: float, position: int) -> float:
    try:
        return math.pow(left, right)
    except OverflowError:
        raise FormulaError("power is too large", position) from None
    except ValueError:
        if left == 0:
            raise FormulaError("division by zero (0 to a negative power)", position) from None
        raise FormulaError("power is not a real number", position) from None


ARITHMETIC: dict[str, Callable[[float, float, int], float]] = {
    "+": lambda left, right, _: left + right,
    "-": lambda left, right, _: left - right,
    "*": lambda left, right, _: left * right,
    "/": _divide,
    "%": _modulo,
    "**": _power,
    "^": _power,
}
COMPARISONS: dict[str, Callable[[float | bool, float | bool], bool]] = {
    "==": lambda left, right: left == right,
    "!=": lambda left, right: left != right,
    "<": lambda left, right: left < right,
    "<=": lambda left, right: left <= right,
    ">": lambda left, right: left > right,
    ">=": lambda left, right: left >= right,
}


def finite(value: float, what: str, position: int) -> float:
    """`value`, or an error when it overflowed to an infinity (or NaN)."""
    if not math.isfinite(value):
        raise FormulaError(f"{what} gives a number too large to represent", position)
    return value


@dataclass(frozen=True)
class Arithmetic(Node):
    operator: str
    left: Node
    right: Node

    def evaluate(self, values: Mapping[str, float]) -> Value:
        left = float(operand(self.left, values))
        right = float(operand(self.right, values))
        result = ARITHMETIC[self.operator](left, right, self.position)
        return finite(result, f"'{self.operator}'", self.position)


@dataclass(frozen=True)
class Comparison(Node):
    operator: str
    left: Node
    right: Node

    def evaluate(self, values: Mapping[str, float]) -> Value:
        left = operand(self.left, values)
        return COMPARISONS[self.operator](left, operand(self.right, values))


@dataclass(frozen=True)
class Logic(Node):
    operator: str  # "&&" or "||" (the words are normalised)
    left: Node
    right: Node

    def evaluate(self, values: Mapping[str, float]) -> Value:
        left = operand(self.left, values)
        if self.operator == "&&":
            return bool(left) and bool(operand(self.right, values))
        return bool(left) or bool(operand(self.right, values))


@dataclass(frozen=True)
class Conditional(Node):
    condition: Node
    when_true: Node
    when_false: Node

    def evaluate(self, values: Mapping[str, float]) -> Value:
        chosen = self.when_true if operand(self.condition, values) else self.when_false
        return chosen.evaluate(values)


@dataclass(frozen=True)
class Coalesce(Node):
    left: Node
    right: Node

    def evaluate(self, values: Mapping[str, float]) -> Value:
        left = self.left.evaluate(values)
        return self.right.evaluate(values) if isinstance(left, Missing) else left


def _round_half_away_from_zero(arguments: Sequence[float]) -> float:
    # Go's math.Round, which expr uses; Python's round() goes to even (round(2.5) == 2).
    value = arguments[0]
    whole = math.trunc(value)
    if abs(value - whole) >= 0.5:  # exact: the fraction of a float is a float
        whole += int(math.copysign(1, value))
    return float(whole)


@dataclass(frozen=True)
class Function:
    """A builtin: its arity (most None: any number) and its implementation over floats."""

    name: str
    least: int
    most: int | None
    apply: Callable[[Sequence[float]], float]


FUNCTIONS = {
    function.name: function
    for function in (
        Function("abs", 1, 1, lambda args: abs(args[0])),
        Function("ceil", 1, 1, lambda args: float(math.ceil(args[0]))),
        Function("floor", 1, 1, lambda args: float(math.floor(args[0]))),
        Function("round", 1, 1, _round_half_away_from_zero),
        Function("float", 1, 1, lambda args: args[0]),
        Function("int", 1, 1, lambda args: float(math.trunc(args[0]))),
        Function("min", 1, None, min),
        Function("max", 1, None, max),
        Function("mean", 1, None, lambda args: math.fsum(args) / len(args)),
        Function("median", 1, None, statistics.median),
    )
}


@dataclass(frozen=True)
class Call(Node):
    function: Function
    arguments: tuple[Node, ...]

    def evaluate(self, values: Mapping[str, float]) -> Value:
        arguments = [float(operand(argument, values)) for argument in self.arguments]
        result = float(self.function.apply(arguments))
        return finite(result, f"{self.function.name}()", self.position)


# ---------------------------------------------------------------------------------------------
# Building nodes: the type checks and the depth bound live here.


def _depth(position: int, *children: Node) -> int:
    depth = 1 + max((child.depth for child in children), default=0)
    if depth > MAX_DEPTH:
        raise FormulaError(f"formula is nested too deeply (more than {MAX_DEPTH} levels)", position)
    return depth


def _require(kind: str, what: str, operator: Token, **sides: Node) -> None:
    """An error unless every side is of `kind` (`what` says it for the user)."""
    for side, node in sides.items():
        if node.kind != kind:
            raise FormulaError(
                f"'{operator.text}' needs {what}, got a {node.kind} on the {side}",
                operator.position,
            )


def _same_kind(what: str, position: int, left: Node, right: Node) -> None:
    if left.kind != right.kind:
        raise FormulaError(
            f"{what} must be of one type, got a {left.kind} and a {right.kind}", position
        )


def make_binary(operator: Token, left: Node, right: Node) -> Node:
    """The node of `left operator right` (any binary operator but the comparisons)."""
    text, position = operator.text, operator.position
    depth = _depth(position, left, right)
    if text in ARITHMETIC:
        _require(NUMBER, "numbers on both sides", operator, left=left, right=right)
        return Arithmetic(NUMBER, position, depth, text, left, right)
    if text == "??":
        _same_kind("both sides of '??'", position, left, right)
        return Coalesce(left.kind, position, depth, left, right)
    _require(BOOLEAN, "booleans (comparisons) on both sides", operator, left=left, right=right)
    return Logic(BOOLEAN, position, depth, "&&" if text in ("&&", "and") else "||", left, right)


def make_comparison(operator: Token, left: Node, right: Node) -> Node:
    """The node of one comparison; ordering needs numbers, equality one type."""
    if operator.text in ("==", "!="):
        _same_kind(f"both sides of '{operator.text}'", operator.position, left, right)
    else:
        _require(NUMBER, "numbers on both sides", operator, left=left, right=right)
    depth = _depth(operator.position, left, right)
    return Comparison(BOOLEAN, operator.position, depth, operator.text, left, right)


def make_unary(operator: Token, node: Node) -> Node:
    """The node of a prefix operator: - and + need a number, ! and not a boolean."""
    text, position = operator.text, operator.position
    if text in ("-", "+") and node.kind != NUMBER:
        raise FormulaError(f"unary '{text}' needs a number, got a boolean", position)
    if text in ("!", "not") and node.kind != BOOLEAN:
        example = "!(a > b)" if text == "!" else "not (a > b)"
        raise FormulaError(
            f"'{text}' needs a boolean, got a number; '{text}' binds tighter than comparisons,"
            f" so write {example}",
            position,
        )
    kind = NUMBER if text in ("-", "+") else BOOLEAN
    return Unary(kind, position, _depth(position, node), text, node)


def make_conditional(question: Token, condition: Node, when_true: Node, when_false: Node) -> Node:
    """The node of `condition ? when_true : when_false`."""
    if condition.kind != BOOLEAN:
        raise FormulaError(
            "the condition before '?' must be a boolean (a comparison such as a > 5), got a number",
            question.position,
        )
    _same_kind("both sides of ':'", question.position, when_true, when_false)
    depth = _depth(question.position, condition, when_true, when_false)
    return Conditional(when_true.kind, question.position, depth, condition, when_true, when_false)


def make_call(name: Token, function: Function, arguments: Sequence[Node]) -> Node:
    """The node of a builtin call, checking its number and types of arguments."""
    count = len(arguments)
    if function.most is not None and function.least == function.most and count != function.least:
        raise FormulaError(
            f"{function.name}() takes exactly {function.least} argument, got {count}", name.position
        )
    if count < function.least:
        raise FormulaError(
            f"{function.name}() needs at least {function.least} argument, got {count}",
            name.position,
        )
    for number, argument in enumerate(arguments, start=1):
        if argument.kind != NUMBER:
            raise FormulaError(
                f"{function.name}() needs numbers, argument {number} is a boolean", name.position
            )
    depth = _depth(name.position, *arguments)
    return Call(NUMBER, name.position, depth, function, tuple(arguments))


# ---------------------------------------------------------------------------------------------
# The parser: expr's precedence climbing (parser/parser.go), with bounded recursion.


def unknown_name_error(name: str, position: int, text: str, names: Collection[str]) -> FormulaError:
    """An unknown trigger name, with a hint: a dashed trigger name, or the closest names."""
    known = sorted(names)
    dashed = _DASHED_NAME.match(text, position - 1)
    if dashed:
        parts = dashed.group().split("-")
        for end in range(len(parts), 1, -1):
            candidate = "-".join(parts[:end])
            if candidate in names:
                return FormulaError(
                    f"unknown trigger name '{name}': trigger '{candidate}' has a '-' in its name,"
                    f' which a formula reads as a minus; write $env["{candidate}"] or rename'
                    " the trigger with '_'",
                    position,
                )
    if not known:
        return FormulaError(
            f"unknown trigger name '{name}': no trigger of this rule has a `name`", position
        )
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return FormulaError(
        f"unknown trigger name '{name}'{hint} (trigger names: {', '.join(known)})", position
    )


class Parser:
    """Parses one formula's tokens into a tree of nodes, recording the trigger names used."""

    def __init__(self, text: str, names: Collection[str]) -> None:
        self.text = text
        self.names = frozenset(names)
        self.tokens = tokenize(text)
        self.index = 0
        self.nesting = 0
        self.used: dict[str, None] = {}  # ordered set

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def at(self, *texts: str) -> bool:
        return self.current.kind == "op" and self.current.text in texts

    def advance(self) -> Token:
        token = self.current
        if token.kind != "end":
            self.index += 1
        return token

    def formula(self) -> Node:
        """The whole formula: one expression, then the end."""
        node = self.expression(TERNARY_PRECEDENCE)
        token = self.current
        if token.kind == "end":
            return node
        if token.text == ")":
            raise FormulaError("unbalanced ')': no '(' to close", token.position)
        raise FormulaError(f"unexpected {describe(token)}: expected an operator", token.position)

    def expression(self, precedence: int) -> Node:
        """Operators of at least `precedence`; at 0 also a ternary. Bounds the recursion."""
        self.nesting += 1
        try:
            if self.nesting > MAX_DEPTH:
                raise FormulaError(
                    f"formula is nested too deeply (more than {MAX_DEPTH} levels)",
                    self.current.position,
                )
            node = self.binary(precedence)
            return self.conditional(node) if precedence == TERNARY_PRECEDENCE else node
        finally:
            self.nesting -= 1

    def binary(self, precedence: int) -> Node:
        """A unary operand, then binary operators of at least `precedence`, as expr does."""
        left = self.unary()
        previous = ""
        while self.current.kind == "op" and self.current.text in BINARY_PRECEDENCE:
            operator = self.current
            operator_precedence, right_associative = BINARY_PRECEDENCE[operator.text]
            if operator_precedence < precedence:
                break
            if previous == "??" and operator.text != "??":
                raise FormulaError(
                    f"'??' and '{operator.text}' cannot be mixed: wrap either in parentheses",
                    operator.position,
                )
            self.advance()
            if operator_precedence == COMPARISON_PRECEDENCE:
                left = self.comparison_chain(left, operator)
            else:
                next_precedence = operator_precedence + (0 if right_associative else 1)
                left = make_binary(operator, left, self.expression(next_precedence))
            previous = operator.text
        return left

    def comparison_chain(self, left: Node, operator: Token) -> Node:
        """`a < b <= c` as `a < b && b <= c` (expr's parseComparison)."""
        chain: Node | None = None
        while True:
            right = self.expression(COMPARISON_PRECEDENCE + 1)
            comparison = make_comparison(operator, left, right)
            and_token = Token("op", "&&", operator.position)
            chain = comparison if chain is None else make_binary(and_token, chain, comparison)
            left, operator = right, self.current
            if not (operator.kind == "op" and operator.text in COMPARISONS):
                return chain
            self.advance()

    def unary(self) -> Node:
        """A prefix operator and its operand, or a primary."""
        if self.current.kind == "op" and self.current.text in UNARY_PRECEDENCE:
            operator = self.advance()
            return make_unary(operator, self.expression(UNARY_PRECEDENCE[operator.text]))
        return self.primary()

    def conditional(self, condition: Node) -> Node:
        """`condition ? a : b`, right-nested through the branches' own expressions."""
        while self.at("?"):
            question = self.advance()
            if self.at(":"):
                raise FormulaError(
                    "'?:' without a middle value is not supported: write c ? a : b",
                    question.position,
                )
            when_true = self.expression(TERNARY_PRECEDENCE)
            if not self.at(":"):
                raise FormulaError(
                    f"'?' at column {question.position} needs ':' and a value for when it is false",
                    self.current.position,
                )
            self.advance()
            when_false = self.expression(TERNARY_PRECEDENCE)
            condition = make_conditional(question, condition, when_true, when_false)
        return condition

    def primary(self) -> Node:
        """A number, a boolean, a name, a call, $env["name"] or a parenthesised expression."""
        token = self.advance()
        if token.kind == "number":
            return Constant(NUMBER, token.position, 1, number_value(token))
        if token.kind == "name":
            return self.name_or_call(token)
        if token.kind == "op" and token.text == "(":
            node = self.expression(TERNARY_PRECEDENCE)
            self.close(token, "expected ')' or an operator")
            return node
        raise self.unexpected(token)

    def close(self, opening: Token, expected: str) -> None:
        """Consume the ')' matching `opening`."""
        if self.at(")"):
            self.advance()
            return
        if self.current.kind == "end":
            raise FormulaError(
                "unbalanced parentheses: this '(' is never closed",
                opening.position,
            )
        raise FormulaError(
            f"unexpected {describe(self.current)}: {expected}", self.current.position
        )

    def unexpected(self, token: Token) -> FormulaError:
        """The error for a token where an operand should be."""
        if token.kind == "end":
            message = "formula ends too early: expected a number, a trigger name or '('"
            return FormulaError(message, token.position)
        if token.kind == "string":
            message = 'strings are only allowed in $env["trigger-name"]'
            return FormulaError(message, token.position)
        if token.text == ")":
            return FormulaError("unbalanced ')': no '(' to close", token.position)
        message = f"unexpected {describe(token)}: expected a number, a trigger name or '('"
        return FormulaError(message, token.position)

    def name_or_call(self, token: Token) -> Node:
        """true, false, $env[...], a function call or a trigger name."""
        if token.text in ("true", "false"):
            return Constant(BOOLEAN, token.position, 1, token.text == "true")
        if token.text == "$env":
            return self.env_lookup(token)
        if self.at("("):
            return self.call(token)
        return self.trigger(token.text, token.position)

    def trigger(self, name: str, position: int) -> Node:
        """A trigger of the rule, by name."""
        if name not in self.names:
            if name in FUNCTIONS:
                raise FormulaError(f"{name} is a function: write {name}(...)", position)
            raise unknown_name_error(name, position, self.text, self.names)
        self.used[name] = None
        return Trigger(NUMBER, position, 1, name)

    def env_lookup(self, env: Token) -> Node:
        """`$env["name"]`: a trigger whose name is not an identifier (it has a '-')."""
        if not self.at("["):
            raise FormulaError('$env is only supported as $env["trigger-name"]', env.position)
        self.advance()
        key = self.advance()
        if key.kind != "string":
            raise FormulaError('$env needs a quoted trigger name: $env["name"]', key.position)
        if not self.at("]"):
            raise FormulaError(
                f"unexpected {describe(self.current)}: expected ']'", self.current.position
            )
        self.advance()
        return self.trigger(key.text[1:-1], key.position)

    def call(self, name: Token) -> Node:
        """A builtin function call; its '(' is the current token."""
        function = FUNCTIONS.get(name.text)
        if function is None:
            known = ", ".join(sorted(FUNCTIONS))
            message = f"unknown function '{name.text}' (functions: {known})"
            raise FormulaError(message, name.position)
        opening = self.advance()
        arguments: list[Node] = []
        while not self.at(")") and self.current.kind != "end":
            arguments.append(self.expression(TERNARY_PRECEDENCE))
            if not self.at(","):
                break
            self.advance()
        self.close(opening, "expected ',' or ')'")
        return make_call(name, function, arguments)


def describe(token: Token) -> str:
    """A token as an error message names it."""
    if token.kind == "end":
        return "end of formula"
    if token.kind in ("number", "name"):
        return f"{token.kind} '{token.text}'"
    if token.kind == "string":
        return f"string {token.text}"
    return f"'{token.text}'"


# ---------------------------------------------------------------------------------------------
# The public interface


class Formula:
    """A compiled formula: evaluate it on each tick's values; it keeps no state between calls."""

    __slots__ = ("text", "names", "_root")

    def __init__(self, text: str, names: tuple[str, ...], root: Node) -> None:
        self.text = text
        self.names = names  # the trigger names it uses, in order of first use
        self._root = root

    def evaluate(self, values: Mapping[str, float]) -> float:
        """The formula's value over trigger values by name; a FormulaError when it has none."""
        return float(operand(self._root, values))

    def __repr__(self) -> str:
        return f"Formula({self.text!r})"


def compile_formula(text: str, names: Collection[str]) -> Formula:
    """Parse and check `text` against the rule's trigger names; FormulaError on any problem."""
    if len(text) > MAX_FORMULA_LENGTH:
        message = f"formula is {len(text)} characters long; the limit is {MAX_FORMULA_LENGTH}"
        raise FormulaError(message, MAX_FORMULA_LENGTH + 1)
    if not text.strip():
        raise FormulaError("formula is empty", 1)
    parser = Parser(text, names)
    root = parser.formula()
    if root.kind != NUMBER:
        raise FormulaError(
            "the formula gives a boolean, but KEDA needs a number: write (condition) ? 1 : 0", 1
        )
    return Formula(text, tuple(parser.used), root)
