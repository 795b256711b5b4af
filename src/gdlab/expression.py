"""Functions a user types, parsed safely: Python's `ast` with a whitelist, never `eval`.

Allowed: numbers, variables (any other name), + - * / ** and unary minus, and the functions
and constants in `FUNCTIONS` and `CONSTANTS`. The tree becomes two things: a sympy expression,
for the derivative in symbols, and a torch function, for the values and autograd gradients
the optimizers use. A mistake is one `GdlabError` naming the column of the problem.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sympy
import torch

from gdlab.errors import GdlabError

FUNCTIONS: dict[str, tuple[Any, Callable[[torch.Tensor], torch.Tensor]]] = {
    "sin": (sympy.sin, torch.sin),
    "cos": (sympy.cos, torch.cos),
    "tan": (sympy.tan, torch.tan),
    "exp": (sympy.exp, torch.exp),
    "log": (sympy.log, torch.log),
    "sqrt": (sympy.sqrt, torch.sqrt),
    "tanh": (sympy.tanh, torch.tanh),
    "abs": (sympy.Abs, torch.abs),
}
CONSTANTS = {"pi": (sympy.pi, math.pi), "e": (sympy.E, math.e)}
MAX_LENGTH = 500
MAX_DEPTH = 64  # nesting of the parsed tree (a power tower, nested calls)
MAX_EXPONENT = 64  # |exponent| of any power with a number as exponent
MAX_MAGNITUDE = 300  # decimal digits of a constant the expression may fold to
EXPAND_OPS = 60  # derivatives of expressions up to this size are expanded; larger ones not
EXPAND_DEGREE = 24  # ... and only polynomials up to this degree: (a+1)**64**... is not

SURFACES = {
    "quadratic-bowl": ("x**2 + y**2", {"x": 1.5, "y": 1.0}),
    "elongated-bowl": ("x**2 + 10*y**2", {"x": 1.5, "y": 0.5}),
    "rosenbrock": ("(1 - x)**2 + 100*(y - x**2)**2", {"x": -1.2, "y": 1.0}),
    "himmelblau": ("(x**2 + y - 11)**2 + (x + y**2 - 7)**2", {"x": 0.0, "y": 0.0}),
    "saddle": ("x**2 - y**2", {"x": 1.0, "y": 1e-3}),
}


@dataclass(frozen=True)
class Expression:
    text: str
    variables: tuple[str, ...]
    symbolic: Any  # a sympy expression
    function: Callable[[dict[str, torch.Tensor]], torch.Tensor]

    def derivative(self, name: str) -> Any:
        """The symbolic derivative, expanded (18A + 18) when the expression is small; as sympy
        leaves it when expanding could take long (a product of many factors)."""
        derivative = sympy.diff(self.symbolic, sympy.Symbol(name, real=True))
        small = sympy.count_ops(self.symbolic) <= EXPAND_OPS
        if small and _degree_bound(self.symbolic) <= EXPAND_DEGREE:
            expanded = sympy.expand(derivative)
            if all(_digits(number) <= MAX_MAGNITUDE for number in expanded.atoms(sympy.Number)):
                return expanded
        return derivative

    def __call__(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.function(values)


def written(expression: Any) -> str:
    """sympy's text as the tutorials write it: 18a + 18, a^2."""
    text = str(expression).replace("**", "^")
    return re.sub(r"(\d)\*([A-Za-z(])", r"\1\2", text)


def parse(text: str) -> Expression:
    """Parse `text` (or a surface name) into an `Expression` of one or two variables."""
    text = SURFACES[text][0] if text in SURFACES else text
    if len(text) > MAX_LENGTH:
        raise GdlabError(f"the expression is {len(text)} characters long; keep it under 500.")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        column = (error.offset or 1) - 1
        raise GdlabError(
            f"cannot read the expression at column {column + 1}: {_point(text, column)} "
            f"({error.msg}); write it like (3+3*a)**2 or (1-x)**2 + 100*(y-x**2)**2."
        ) from None
    if _depth(tree.body) > MAX_DEPTH:
        raise GdlabError(
            f"the expression nests deeper than {MAX_DEPTH} levels; write a shallower one."
        )
    names: list[str] = []
    try:
        symbolic = sympy.sympify(_to_sympy(tree.body, text, names))
    except GdlabError:
        raise
    except (OverflowError, ZeroDivisionError, ValueError, TypeError, RecursionError,
            MemoryError) as error:  # fmt: skip
        raise GdlabError(
            f"the expression cannot be evaluated ({error}); write one with a finite value "
            f"(no division by zero, no 0 to a negative power, no huge numbers)."
        ) from None
    if symbolic.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan):
        raise GdlabError(
            "the expression is not finite (a division by zero, or 0 to a negative power); "
            "write one that has a value everywhere near the start."
        )
    variables = tuple(sorted(dict.fromkeys(names)))
    if not 1 <= len(variables) <= 2:
        found = ", ".join(variables) or "none"
        raise GdlabError(
            f"the expression must have one or two variables; it has {len(variables)} ({found})."
        )
    body = tree.body

    def function(values: dict[str, torch.Tensor]) -> torch.Tensor:
        result: torch.Tensor = _to_torch(body, values)
        return result

    return Expression(text, variables, symbolic, function)


def _degree_bound(expression: Any) -> float:
    """An upper bound of the polynomial degree that expanding would produce: a power
    multiplies its base's degree by a numeric exponent, a product adds, a sum takes the
    largest; anything else (a function of x) counts as degree 1."""
    if expression.is_Symbol:
        return 1.0
    if expression.is_Number or not expression.free_symbols:
        return 0.0
    if expression.is_Pow and expression.exp.is_Number:
        return _degree_bound(expression.base) * abs(float(expression.exp))
    if expression.is_Mul:
        return float(sum(_degree_bound(arg) for arg in expression.args))
    if expression.is_Add:
        return max(_degree_bound(arg) for arg in expression.args)
    return 1.0


def _digits(number: Any) -> float:
    """Decimal digits of a sympy number's numerator and denominator, without printing it."""
    if number.is_Rational:
        return max(int(number.p).bit_length(), int(number.q).bit_length()) * 0.30103
    return 0.0


def _depth(node: ast.AST) -> int:
    """The height of the tree, without recursion (a deep tree must not overflow the stack)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:
            stack.extend((child, level + 1) for child in ast.iter_child_nodes(current))
    return deepest


def _check_power(node: ast.AST, base: Any, exponent: Any, text: str) -> None:
    """Refuse powers whose folding or expansion is unbounded: an exponent above MAX_EXPONENT,
    or a constant of more than MAX_MAGNITUDE digits (9**9**9**9)."""
    if not exponent.is_number:  # a constant part of the exponent splits off when expanded
        constant = exponent.as_coeff_Add()[0]
        if constant.is_finite and abs(float(constant)) > MAX_EXPONENT:
            raise _fail(node, text, f"an exponent with a constant above {MAX_EXPONENT}")
        return
    if exponent.is_finite and abs(float(exponent)) > MAX_EXPONENT:
        raise _fail(node, text, f"an exponent above {MAX_EXPONENT} ({exponent})")
    if exponent.is_finite and base.is_number and base.is_finite and base != 0:
        digits = abs(float(exponent)) * math.log10(abs(complex(base)))
        if digits > MAX_MAGNITUDE:
            raise _fail(node, text, f"a number of about {digits:.0f} digits")


def _point(text: str, column: int) -> str:
    return f"{text[:column]}>>>{text[column:]}" if text else "''"


def _fail(node: ast.AST, text: str, what: str) -> GdlabError:
    column = getattr(node, "col_offset", 0)
    return GdlabError(
        f"{what} at column {column + 1}: {_point(text, column)}; use numbers, variables, "
        f"+ - * / **, and {', '.join(FUNCTIONS)}, pi, e."
    )


_SYMPY_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}


def _to_sympy(node: ast.AST, text: str, names: list[str]) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sympy.nsimplify(node.value) if isinstance(node.value, float) else node.value
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id][0]
        if node.id in FUNCTIONS:
            raise _fail(node, text, f"{node.id} is a function: write {node.id}(...)")
        names.append(node.id)
        return sympy.Symbol(node.id, real=True)
    if isinstance(node, ast.BinOp) and type(node.op) in _SYMPY_OPERATORS:
        left = _to_sympy(node.left, text, names)
        right = _to_sympy(node.right, text, names)
        if isinstance(node.op, ast.Pow):
            _check_power(node, sympy.sympify(left), sympy.sympify(right), text)
        return _SYMPY_OPERATORS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _to_sympy(node.operand, text, names)
        return -value if isinstance(node.op, ast.USub) else value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FUNCTIONS
        and len(node.args) == 1
        and not node.keywords
    ):
        return FUNCTIONS[node.func.id][0](_to_sympy(node.args[0], text, names))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise _fail(node, text, "^ is not a power here: write ** (a**2)")
    raise _fail(node, text, f"{type(node).__name__.lower()} is not allowed")


def _to_torch(node: ast.AST, values: dict[str, torch.Tensor]) -> Any:
    """Evaluate the (already whitelisted) tree on tensors."""
    if isinstance(node, ast.Constant):  # a float tensor: 10**20 fits, and 1/0 is inf, not raised
        number: float = node.value  # type: ignore[assignment]  # numbers only, by the whitelist
        return torch.tensor(float(number), dtype=torch.float64)
    if isinstance(node, ast.Name):
        return CONSTANTS[node.id][1] if node.id in CONSTANTS else values[node.id]
    if isinstance(node, ast.BinOp):
        return _SYMPY_OPERATORS[type(node.op)](
            _to_torch(node.left, values), _to_torch(node.right, values)
        )
    if isinstance(node, ast.UnaryOp):
        value = _to_torch(node.operand, values)
        return -value if isinstance(node.op, ast.USub) else value
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    argument = _to_torch(node.args[0], values)
    return FUNCTIONS[node.func.id][1](torch.as_tensor(argument, dtype=torch.float64))
