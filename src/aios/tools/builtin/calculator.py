"""``aios/calculator``: arithmetic on an expression, read by a parser of our own rules — never ``eval``.

The expression is parsed into Python's syntax tree and only numbers, + - * / // % ** ^ (both powers), unary
signs, parentheses, a few constants and math functions are evaluated; anything else is refused by name. Powers
and factorials are bounded, so no expression can make the kernel compute for minutes or fill its memory.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any, Callable

from aios.tools.tool import Tool, ToolContext, ToolError

MAX_LENGTH = 1000  # characters of expression
MAX_DIGITS = 10_000  # digits of any intermediate integer


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
    if not float(n).is_integer() or not 0 <= n <= 3000:
        raise ToolError("factorial takes a whole number from 0 to 3000")
    return math.factorial(int(n))


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _power,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil, "exp": math.exp,
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
        value = _evaluate(tree.body)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (ValueError, OverflowError, TypeError) as exc:
        raise ToolError(f"cannot compute it: {exc}") from None
    if isinstance(value, int) and abs(value).bit_length() > MAX_DIGITS * 3.33:
        raise ToolError(f"the result has more than {MAX_DIGITS} digits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError(f"the result is not a finite number ({value})")
    return value


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(left, int) and isinstance(right, int) and isinstance(node.op, ast.Mult):
            if (abs(left).bit_length() + abs(right).bit_length()) > MAX_DIGITS * 3.33:
                raise ToolError(f"the product has more than {MAX_DIGITS} digits")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
            and not node.keywords:
        return _FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args))
    raise ToolError(f"{_shown(node)} is not allowed; use numbers, + - * / // % ** ^, parentheses, "
                    f"{', '.join(_CONSTANTS)} and {', '.join(_FUNCTIONS)}")


def _shown(node: ast.AST) -> str:
    try:
        return repr(ast.unparse(node))
    except Exception:  # an odd node: name its kind
        return type(node).__name__


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
