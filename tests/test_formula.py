"""The scalingModifiers formula evaluator (eventscaler/formula.py), a pure module: no mocks needed.

Scenarios covered:
- valid formulas and their values: KEDA's documented shapes, expr's precedence (unary minus below
  `**`, `!` above `&&`, `&&` above `||`, the ternary lowest), associativity (`**` right, `-` and
  `/` left), chained comparisons, nested ternaries, number literals, the builtins and their
  arities, `??` over a trigger without a value, `$env["name-with-dash"]`, lazy `?:`, `&&`, `||`
- invalid formulas: the exact message fragment and its column, for unknown names (did you mean,
  the dashed-name hint), bad tokens, unbalanced parentheses, arities, types, empty, too long,
  too deep (never a RecursionError), and the depth bound's exact boundary
- evaluation errors: division and modulo by zero, overflow, a non-real power, a missing or
  non-finite trigger value; never a NaN or infinity returned
- `Formula.names` and the error's text
- properties: random + - * trees written with full or with minimal parentheses evaluate to the
  value Python computes from the tree; arbitrary text either compiles or raises FormulaError, and
  a compiled formula gives a finite float or a FormulaError
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventscaler.formula import MAX_DEPTH, MAX_FORMULA_LENGTH, FormulaError, compile_formula

NAMES = ("trig_one", "trig_two", "a", "b", "my-queue", "max")
VALUES = {"trig_one": 4.0, "trig_two": 6.0, "a": 2.0, "b": 3.0, "my-queue": 10.0, "max": 1.0}

VALID = [
    # KEDA's documented shapes
    ("(trig_one + trig_two) / 2", {}, 5.0),
    ("trig_one > 5 ? trig_one : trig_two", {}, 6.0),
    ("trig_one > 3 ? trig_one : trig_two", {}, 4.0),
    ("max(a, b) * 2", {}, 6.0),
    ("max(trig_one, trig_two / 1000)", {}, 4.0),
    ("float(trig_one)", {}, 4.0),
    # arithmetic precedence and associativity
    ("1 + 2 * 3", {}, 7.0),
    ("(1 + 2) * 3", {}, 9.0),
    ("10 - 4 - 3", {}, 3.0),
    ("64 / 4 / 2", {}, 8.0),
    ("2 * 10 % 4", {}, 0.0),
    ("10 % 4 * 2", {}, 4.0),
    ("2 ** 3 ** 2", {}, 512.0),
    ("2 ^ 3 ^ 2", {}, 512.0),
    ("(2 ** 3) ** 2", {}, 64.0),
    ("2 * 3 ** 2", {}, 18.0),
    ("-2 ** 2", {}, -4.0),
    ("(-2) ** 2", {}, 4.0),
    ("2 ** -1", {}, 0.5),
    ("-a * b", {}, -6.0),
    ("a - -b", {}, 5.0),
    ("--a", {}, 2.0),
    ("+a", {}, 2.0),
    ("-7 % 3", {}, -1.0),
    ("7.5 % 2", {}, 1.5),
    ("7 / 2", {}, 3.5),
    # number literals
    ("1_000 + 0.5", {}, 1000.5),
    (".5 * 4", {}, 2.0),
    ("1e3", {}, 1000.0),
    ("2.5E-1", {}, 0.25),
    ("1.", {}, 1.0),
    ("0x1F + 0o17 + 0b101", {}, 51.0),
    # comparisons, logic and their precedence
    ("a == 2 ? 10 : 20", {}, 10.0),
    ("a != 2 ? 10 : 20", {}, 20.0),
    ("a >= 2 && b <= 3 ? 1 : 0", {}, 1.0),
    ("a > 2 || b < 3 ? 1 : 0", {}, 0.0),
    ("a > 1 and b > 1 ? 1 : 0", {}, 1.0),
    ("a > 5 or b > 1 ? 1 : 0", {}, 1.0),
    ("not (a > 1) ? 1 : 0", {}, 0.0),
    ("!(a > 1) ? 1 : 0", {}, 0.0),
    ("true || false && false ? 1 : 0", {}, 1.0),  # && binds tighter than ||
    ("!true || true ? 1 : 0", {}, 1.0),  # ! binds tighter than ||
    ("a + 1 > b ? 1 : 0", {}, 0.0),  # arithmetic binds tighter than comparison
    ("(a > 1) == (b > 1) ? 1 : 0", {}, 1.0),
    ("1 < a < 3 ? 1 : 0", {"a": 2.0}, 1.0),
    ("1 < a < 3 ? 1 : 0", {"a": 3.0}, 0.0),
    ("true ? 1 : 2", {}, 1.0),
    # ternaries: lowest precedence, nested on either side
    ("a > 10 ? 3 : a > 5 ? 2 : 1", {"a": 12.0}, 3.0),
    ("a > 10 ? 3 : a > 5 ? 2 : 1", {"a": 7.0}, 2.0),
    ("a > 10 ? 3 : a > 5 ? 2 : 1", {"a": 1.0}, 1.0),
    ("a > 5 ? b > 5 ? 1 : 2 : 3", {"a": 6.0, "b": 0.0}, 2.0),
    ("a > 5 ? b > 5 ? 1 : 2 : 3", {"a": 0.0}, 3.0),
    ("a > 5 ? 1 : 0 + 10", {}, 10.0),
    ("1 + (a > 5 ? 1 : 0)", {}, 1.0),
    # functions
    ("max(a, b, 7)", {}, 7.0),
    ("min(a)", {}, 2.0),
    ("min(b, a, trig_two)", {}, 2.0),
    ("max(a, b,)", {}, 3.0),
    ("max(max, 2)", {}, 2.0),  # a trigger named like a function is still a trigger
    ("abs(-3)", {}, 3.0),
    ("ceil(1.2)", {}, 2.0),
    ("floor(-1.2)", {}, -2.0),
    ("round(2.5)", {}, 3.0),  # half away from zero, as Go's math.Round (Python's round gives 2)
    ("round(-2.5)", {}, -3.0),
    ("round(0.49999999999999994)", {}, 0.0),
    ("int(-2.7)", {}, -2.0),
    ("mean(a, b)", {}, 2.5),
    ("median(1, 3, 2)", {}, 2.0),
    ("median(1, 2, 3, 4)", {}, 2.5),
    # a trigger without a value, $env, laziness, layout
    ("a ?? 0", {"a": None}, 0.0),
    ("a ?? 0", {}, 2.0),
    ("trig_one ?? trig_two ?? 8", {"trig_one": None}, 6.0),
    ("trig_one ?? trig_two ?? 8", {"trig_one": None, "trig_two": None}, 8.0),
    ("1 + a ?? 5", {"a": None}, 6.0),  # ?? binds tightest: 1 + (a ?? 5)
    ("a > 5 ? b : 1", {"b": None}, 1.0),  # the branch not taken may lack a value
    ('$env["my-queue"] * 2', {}, 20.0),
    ("$env['my-queue'] - a", {}, 8.0),
    ("b > 0 ? a / b : 0", {"b": 0.0}, 0.0),
    ("b == 0 || a / b > 1 ? 1 : 0", {"b": 0.0}, 1.0),
    ("b != 0 && a / b > 1 ? 1 : 0", {"b": 0.0}, 0.0),
    ("a +\n    b", {}, 5.0),
]


@pytest.mark.parametrize(("text", "overrides", "expected"), VALID, ids=[v[0] for v in VALID])
def test_valid_formula_evaluates_to_its_value(
    text: str, overrides: dict[str, float | None], expected: float
) -> None:
    values = {**VALUES, **overrides}
    present = {name: value for name, value in values.items() if value is not None}
    result = compile_formula(text, NAMES).evaluate(present)
    assert result == expected
    assert type(result) is float


INVALID = [
    # empty, too long
    ("", "formula is empty", 1),
    ("  \n ", "formula is empty", 1),
    ("a + " * 300, "formula is 1200 characters long; the limit is 1000", 1001),
    # names
    (
        "trig_on + 1",
        "unknown trigger name 'trig_on'; did you mean 'trig_one' or 'trig_two'? (trigger names:"
        " a, b, max, my-queue, trig_one, trig_two)",
        1,
    ),
    ("a + zzz", "unknown trigger name 'zzz' (trigger names: a, b, max", 5),
    (
        "my-queue / 2",
        "unknown trigger name 'my': trigger 'my-queue' has a '-' in its name, which a formula"
        ' reads as a minus; write $env["my-queue"]',
        1,
    ),
    ('$env["nope"]', "unknown trigger name 'nope'", 6),
    ("abs + 1", "abs is a function: write abs(...)", 1),
    ("sqrt(a)", "unknown function 'sqrt' (functions: abs, ceil, float, floor, int, max,", 1),
    # bad tokens
    ("a # b", "unexpected character '#'", 3),
    ("a = b", "unexpected '=': to compare, write '=='", 3),
    ("a & b", "unexpected '&': write '&&' (or 'and')", 3),
    ("a | b", "unexpected '|': write '||' (or 'or')", 3),
    ("a.b", "unexpected character '.'", 2),
    ("12ab", "bad number '12ab'", 1),
    ("1e + 2", "bad number '1e'", 1),
    ("0x", "bad number '0x'", 1),
    ("0b12", "bad number '0b12'", 1),
    ("1e999", "number '1e999' is too large", 1),
    ("1 +* 2", "unexpected '*': expected a number, a trigger name or '('", 4),
    ("[a]", "unexpected '['", 1),
    ("a b", "unexpected name 'b': expected an operator", 3),
    ("a 2", "unexpected number '2': expected an operator", 3),
    ("a >", "formula ends too early: expected a number, a trigger name or '('", 4),
    ("'x' + a", 'strings are only allowed in $env["trigger-name"]', 1),
    ('$env["a', "string is never closed", 6),
    ('$env["a\\"b"]', "escapes (\\) are not supported", 6),
    ("$foo", "the only $ name is $env", 1),
    ("$env + 1", '$env is only supported as $env["trigger-name"]', 1),
    ("$env[a]", '$env needs a quoted trigger name: $env["name"]', 6),
    ("a in b", "operator 'in' is not supported", 3),
    ("nil", "'nil' is not supported", 1),
    ("let x = 1; x", "'let' is not supported", 1),
    # parentheses
    ("(a + b", "unbalanced parentheses: this '(' is never closed", 1),
    ("((a + b)", "unbalanced parentheses: this '(' is never closed", 1),
    ("a + b)", "unbalanced ')': no '(' to close", 6),
    (")", "unbalanced ')': no '(' to close", 1),
    ("(a b)", "unexpected name 'b': expected ')' or an operator", 4),
    ("max(a, b", "unbalanced parentheses: this '(' is never closed", 4),
    ("max(a b)", "unexpected name 'b': expected ',' or ')'", 7),
    # arities
    ("abs(a, b)", "abs() takes exactly 1 argument, got 2", 1),
    ("round()", "round() takes exactly 1 argument, got 0", 1),
    ("min()", "min() needs at least 1 argument, got 0", 1),
    # ternary shape
    ("a > 1 ? b", "'?' at column 7 needs ':' and a value for when it is false", 10),
    ("a > 1 ?: b", "'?:' without a middle value is not supported", 7),
    # types
    ("a > 1", "the formula gives a boolean, but KEDA needs a number", 1),
    ("a + (b > 1)", "'+' needs numbers on both sides, got a boolean on the right", 3),
    ("a && b", "'&&' needs booleans (comparisons) on both sides, got a number on the left", 3),
    ("not a > 1 ? 1 : 0", "'not' needs a boolean, got a number; 'not' binds tighter", 1),
    ("!a ? 1 : 0", "so write !(a > b)", 1),
    ("-(a > 1)", "unary '-' needs a number, got a boolean", 1),
    ("a ? 1 : 2", "the condition before '?' must be a boolean", 3),
    ("a > 1 ? 1 : true", "both sides of ':' must be of one type, got a number and a boolean", 7),
    ("a == true ? 1 : 0", "both sides of '==' must be of one type", 3),
    ("a < true ? 1 : 0", "'<' needs numbers on both sides, got a boolean on the right", 3),
    ("max(a, a > 1)", "max() needs numbers, argument 2 is a boolean", 1),
    ("a ?? 1 + 2", "'??' and '+' cannot be mixed: wrap either in parentheses", 8),
    # depth: parentheses, unary chains, left and right chains
    ("(" * 100 + "a" + ")" * 100, f"nested too deeply (more than {MAX_DEPTH} levels)", 65),
    ("-" * 500 + "a", "nested too deeply", 65),
    ("+".join(["a"] * 200), "nested too deeply", 128),
    ("a ** " * 100 + "a", "nested too deeply", 321),
    ("max(" * 100 + "a" + ")" * 100, "nested too deeply", 257),
]


@pytest.mark.parametrize(
    ("text", "fragment", "position"), INVALID, ids=[v[0][:40] for v in INVALID]
)
def test_invalid_formula_is_refused_with_message_and_column(
    text: str, fragment: str, position: int
) -> None:
    with pytest.raises(FormulaError) as caught:
        compile_formula(text, NAMES)
    assert fragment in caught.value.message
    assert caught.value.position == position


def test_unknown_name_when_no_trigger_has_a_name() -> None:
    with pytest.raises(FormulaError, match="no trigger of this rule has a `name`"):
        compile_formula("queue / 2", [])


def test_depth_bound_is_exact() -> None:
    """MAX_DEPTH levels compile and evaluate; one more is refused (and never a RecursionError)."""
    assert compile_formula("(" * (MAX_DEPTH - 1) + "a" + ")" * (MAX_DEPTH - 1), NAMES)
    with pytest.raises(FormulaError, match="nested too deeply"):
        compile_formula("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH, NAMES)
    chain = compile_formula("+".join(["a"] * MAX_DEPTH), NAMES)  # MAX_DEPTH - 1 additions
    assert chain.evaluate(VALUES) == 2.0 * MAX_DEPTH
    with pytest.raises(FormulaError, match="nested too deeply"):
        compile_formula("+".join(["a"] * (MAX_DEPTH + 1)), NAMES)


def test_length_bound_is_exact() -> None:
    longest = "1" + " " * (MAX_FORMULA_LENGTH - 1)
    assert compile_formula(longest, NAMES).evaluate({}) == 1.0
    with pytest.raises(FormulaError, match="the limit is 1000"):
        compile_formula(longest + " ", NAMES)


EVALUATION_ERRORS = [
    ("a / b", {"b": 0.0}, "division by zero", 3),
    ("a / (b - 3)", {}, "division by zero", 3),
    ("a % b", {"b": 0.0}, "modulo by zero", 3),
    ("b ** -1", {"b": 0.0}, "division by zero (0 to a negative power)", 3),
    ("a ** 0.5", {"a": -1.0}, "power is not a real number", 3),
    ("a * 1e308", {"a": 10.0}, "'*' gives a number too large to represent", 3),
    ("10 ** a", {"a": 400.0}, "power is too large", 4),
    ("a + b", {"b": None}, "no value for trigger 'b' (write `b ?? 0` for a default)", 5),
    ("max(a, b)", {"a": None}, "no value for trigger 'a'", 5),
    ("(a > 1 ? b : 1) + 1", {"b": None}, "no value for trigger 'b'", 10),
    ("a > 1 ? b : 1", {"b": None}, "no value for trigger 'b'", 9),
    ("a", {"a": math.nan}, "trigger 'a' is not a finite number: nan", 1),
    ("a", {"a": math.inf}, "trigger 'a' is not a finite number: inf", 1),
]


@pytest.mark.parametrize(
    ("text", "overrides", "fragment", "position"),
    EVALUATION_ERRORS,
    ids=[f"{v[0]} {v[1]}" for v in EVALUATION_ERRORS],
)
def test_evaluation_error_is_a_formula_error_never_nan_or_infinity(
    text: str, overrides: dict[str, float | None], fragment: str, position: int
) -> None:
    values = {**VALUES, **overrides}
    present = {name: value for name, value in values.items() if value is not None}
    formula = compile_formula(text, NAMES)
    with pytest.raises(FormulaError) as caught:
        formula.evaluate(present)
    assert fragment in caught.value.message
    assert caught.value.position == position


def test_names_lists_the_triggers_used_once_in_order_of_use() -> None:
    formula = compile_formula('b + a * b + $env["my-queue"] + max(a, 1)', NAMES)
    assert formula.names == ("b", "a", "my-queue")
    assert compile_formula("1 + 2", NAMES).names == ()


def test_a_compiled_formula_is_reused_across_ticks() -> None:
    formula = compile_formula("(trig_one + trig_two) / 2", NAMES)
    assert [formula.evaluate({"trig_one": n, "trig_two": 10.0}) for n in (0.0, 10.0, 30.0)] == [
        5.0,
        10.0,
        20.0,
    ]


def test_error_text_names_the_column() -> None:
    with pytest.raises(FormulaError) as caught:
        compile_formula("a / b", NAMES).evaluate({"a": 1.0, "b": 0.0})
    assert str(caught.value) == "division by zero (at column 3)"


# ---------------------------------------------------------------------------------------------
# Properties


@dataclass(frozen=True)
class Leaf:
    text: str
    value: float


@dataclass(frozen=True)
class Negate:
    operand: Tree


@dataclass(frozen=True)
class Apply:
    operator: str
    left: Tree
    right: Tree


Tree = Leaf | Negate | Apply
PROPERTY_VALUES = {"a": 2.0, "b": 3.0, "trig_one": -4.0, "trig_two": 0.5}
PRECEDENCE = {"+": 30, "-": 30, "*": 60}
UNARY_MINUS = 90


def value_of(tree: Tree) -> float:
    """The tree's value computed directly in Python, in the tree's own order."""
    if isinstance(tree, Leaf):
        return tree.value
    if isinstance(tree, Negate):
        return -value_of(tree.operand)
    left, right = value_of(tree.left), value_of(tree.right)
    return {"+": left + right, "-": left - right, "*": left * right}[tree.operator]


def fully_parenthesised(tree: Tree) -> str:
    if isinstance(tree, Leaf):
        return tree.text
    if isinstance(tree, Negate):
        return f"-({fully_parenthesised(tree.operand)})"
    return f"({fully_parenthesised(tree.left)} {tree.operator} {fully_parenthesised(tree.right)})"


def precedence_of(tree: Tree) -> int:
    if isinstance(tree, Leaf):
        return 1_000
    if isinstance(tree, Negate):
        return UNARY_MINUS
    return PRECEDENCE[tree.operator]


def minimally_parenthesised(tree: Tree, context: int = 0, right_side: bool = False) -> str:
    """Parentheses only where expr's precedence and left associativity need them."""
    if isinstance(tree, Leaf):
        text = tree.text
    elif isinstance(tree, Negate):
        text = "-" + minimally_parenthesised(tree.operand, UNARY_MINUS)
    else:
        own = PRECEDENCE[tree.operator]
        left = minimally_parenthesised(tree.left, own)
        right = minimally_parenthesised(tree.right, own, right_side=True)
        text = f"{left} {tree.operator} {right}"
    own = precedence_of(tree)
    needs = own < context or (right_side and own == context)
    return f"({text})" if needs else text


leaves = st.one_of(
    st.integers(min_value=0, max_value=99).map(lambda n: Leaf(str(n), float(n))),
    st.sampled_from(sorted(PROPERTY_VALUES)).map(lambda name: Leaf(name, PROPERTY_VALUES[name])),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(Negate, children),
        st.builds(Apply, st.sampled_from(sorted(PRECEDENCE)), children, children),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_random_arithmetic_trees_evaluate_as_python_computes_them(tree: Tree) -> None:
    expected = value_of(tree)
    for text in (fully_parenthesised(tree), minimally_parenthesised(tree)):
        assert compile_formula(text, NAMES).evaluate(PROPERTY_VALUES) == expected, text


FRAGMENTS = [
    "a", "b", "1", "0", "2.5", "1e3", " ", "(", ")", "+", "-", "*", "/", "%", "**", "^", "!",
    "?", ":", "<", ">=", "==", "&&", "||", "and", "or", "not", "??", ",", "max(", "round(",
    "true", "$env[", '"a"', "]", "=", "&", "#", "'", "0x", "_",
]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))
def test_arbitrary_text_compiles_or_fails_with_a_formula_error(text: str) -> None:
    try:
        formula = compile_formula(text, ["a", "b"])
    except FormulaError as error:
        assert 1 <= error.position <= len(text) + 1
        return
    for values in ({"a": 2.0, "b": 0.0}, {"a": -1.5}, {}):
        try:
            result = formula.evaluate(values)
        except FormulaError:
            continue
        assert isinstance(result, float)
        assert math.isfinite(result)
