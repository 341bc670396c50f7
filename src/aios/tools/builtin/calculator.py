"""``aios/calculator``: arithmetic on an expression, read by a parser of our own rules — never ``eval``.

The expression is parsed into Python's syntax tree and only numbers, + - * / // % ** ^ (both powers), unary
signs, parentheses, a few constants and math functions are evaluated; anything else is refused by name. Every
step's cost is bounded before it is taken, so no expression can make the kernel compute for minutes or fill its
memory (a tool thread holds the interpreter's lock while it computes, so a slow step would stall the kernel):
the expression's length and nesting, each integer along the way (at most ``MAX_DIGITS`` digits, checked after
every step: a sum or product of two such integers is cheap), and before they run, the steps whose result could
be far larger than their operands — powers, factorials and ``round`` to a negative number of digits.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any, Callable

from aios.tools.tool import Tool, ToolContext, ToolError

MAX_LENGTH = 1000  # characters of expression
# Operations nested in one another, a sum of many terms too (each is two frames of the evaluator: 400 stay well
# within Python's recursion limit of 1000, and a sum of 400 numbers is not refused).
MAX_DEPTH = 400
# Digits of any integer along the way: Python's default limit on converting an integer to text, past which the
# result could not be written as JSON.
MAX_DIGITS = 4300
_TOO_LARGE = 10 ** MAX_DIGITS  # the smallest integer with more than MAX_DIGITS digits
MAX_FACTORIAL = 1500  # 1500! has 4115 digits; 1559! would have more than MAX_DIGITS


def _power(base: float, exponent: float) -> float:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and base not in (0, 1, -1):
        if exponent * math.log10(abs(base)) > MAX_DIGITS:
            raise ToolError(f"{base} ** {exponent} has more than {MAX_DIGITS} digits")
    try:
        value = operator.pow(base, exponent)
    except OverflowError:
        raise ToolError(f"{base} ** {exponent} is too large") from None
    if isinstance(value, complex):  # a negative base to a fractional power: Python answers a complex number
        raise ToolError(f"({base}) ** {exponent} is not a real number (a negative number to a fractional power)")
    return value


def _factorial(n: float) -> int:
    if not float(n).is_integer() or not 0 <= n <= MAX_FACTORIAL:
        raise ToolError(f"factorial takes a whole number from 0 to {MAX_FACTORIAL}")
    return math.factorial(int(n))


def _round(number: float, ndigits: int | None = None) -> float:
    # Rounding an integer to -n digits computes 10 ** n: unbounded, it could take hours and gigabytes.
    if isinstance(ndigits, int) and abs(ndigits) > MAX_DIGITS:
        raise ToolError(f"round takes a number of digits from -{MAX_DIGITS} to {MAX_DIGITS}, not {ndigits}")
    return round(number, ndigits)


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _power,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "abs": abs, "round": _round, "floor": math.floor, "ceil": math.ceil, "exp": math.exp,
    "log": math.log, "log10": math.log10, "log2": math.log2, "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "asin": math.asin, "acos": math.acos, "atan": math.atan, "degrees": math.degrees, "radians": math.radians,
    "min": min, "max": max, "factorial": _factorial, "hypot": math.hypot,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def calculate(expression: str) -> int | float:
    """The value of ``expression``; raises ToolError saying what is wrong with it."""
    if len(expression) > MAX_LENGTH:
        raise ToolError(f"the expression is {len(expression)} characters; at most {MAX_LENGTH}")
    try:
        # ^ is a power to anyone but a programmer; as ** it also gets a power's precedence.
        tree = ast.parse(expression.strip().replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg} at character {exc.offset}") from None
    try:
        value = _evaluate(tree.body, MAX_DEPTH)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (ValueError, OverflowError, TypeError) as exc:
        raise ToolError(f"cannot compute it: {exc}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError(f"the result is not a finite number ({value})")
    return value


def _evaluate(node: ast.AST, depth: int) -> Any:
    """The value of ``node``, nested at most ``depth`` deep, each integer along the way within MAX_DIGITS."""
    if depth == 0:
        raise ToolError(f"the expression nests more than {MAX_DEPTH} operations in one another")
    value = _step(node, depth - 1)
    if isinstance(value, int) and abs(value) >= _TOO_LARGE:
        raise ToolError(f"{_shown(node)} has more than {MAX_DIGITS} digits")
    return value


def _step(node: ast.AST, depth: int) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left, depth), _evaluate(node.right, depth))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand, depth))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
            and not node.keywords:
        return _FUNCTIONS[node.func.id](*(_evaluate(arg, depth) for arg in node.args))
    raise ToolError(f"{_shown(node)} is not allowed; use numbers, + - * / // % ** ^, parentheses, "
                    f"{', '.join(_CONSTANTS)} and {', '.join(_FUNCTIONS)}")


def _shown(node: ast.AST) -> str:
    try:
        shown = ast.unparse(node)
    except Exception:  # an odd node: name its kind
        return type(node).__name__
    return repr(shown if len(shown) <= 60 else shown[:57] + "...")


def _run(params: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    return {"expression": params["expression"], "result": calculate(params["expression"])}


TOOL = Tool(
    name="aios/calculator",
    description="Evaluate an arithmetic expression, e.g. '2 * (3 + 4) ** 2' or 'sqrt(2) / 2'. Knows + - * / // % "
                "** (or ^), parentheses, pi, e, and sqrt, log, exp, sin, cos, tan, round, floor, ceil, min, max.",
    parameters={"type": "object", "properties": {"expression": {
        "type": "string", "minLength": 1, "maxLength": MAX_LENGTH, "description": "the expression"}},
        "required": ["expression"], "additionalProperties": False},
    run=_run, timeout_s=5.0,
)
