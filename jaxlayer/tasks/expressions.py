"""A safe evaluator for arithmetic expressions: integers, + - * /, parentheses.

Parses with `ast` and walks the tree itself: nothing is ever passed to eval, and
anything but the four operations on integer literals is rejected. Division is exact
(fractions), so "7/2*2" is 7.
"""

from __future__ import annotations

import ast
from fractions import Fraction

MAX_EXPRESSION_CHARS = 200

_OPERATIONS = {
    ast.Add: lambda left, right: left + right,
    ast.Sub: lambda left, right: left - right,
    ast.Mult: lambda left, right: left * right,
    ast.Div: lambda left, right: left / right,
}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


class InvalidExpression(ValueError):
  """The text is not an arithmetic expression of the allowed form."""


def parse_expression(text: str) -> ast.expr:
  """Parse text as an expression of integer literals, + - * / and parentheses."""
  if len(text) > MAX_EXPRESSION_CHARS:
    raise InvalidExpression(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
  try:
    tree = ast.parse(text.strip(), mode="eval").body
  except (SyntaxError, ValueError) as error:
    raise InvalidExpression(f"not an expression: {text!r}") from error
  for node in ast.walk(tree):
    allowed_operator = isinstance(node, ast.BinOp) and type(node.op) in _OPERATIONS
    integer_literal = isinstance(node, ast.Constant) and type(node.value) is int
    if not (allowed_operator or integer_literal or isinstance(node, ast.operator)):
      raise InvalidExpression(f"only integers and + - * / are allowed, found {ast.dump(node)[:60]}")
  return tree


def evaluate(tree: ast.expr) -> Fraction:
  """Value of a tree from parse_expression; ZeroDivisionError on division by zero."""
  if isinstance(tree, ast.Constant):
    return Fraction(tree.value)
  return _OPERATIONS[type(tree.op)](evaluate(tree.left), evaluate(tree.right))


def operators(tree: ast.expr) -> set[str]:
  """The operators the expression uses, as symbols: {"+", "*"} for "(3+7)*25"."""
  return {_SYMBOLS[type(node.op)] for node in ast.walk(tree) if isinstance(node, ast.BinOp)}


def literals(tree: ast.expr) -> list[int]:
  """The integer literals of the expression, sorted."""
  return sorted(node.value for node in ast.walk(tree) if isinstance(node, ast.Constant))


def compact(tree: ast.expr) -> str:
  """The expression with only the parentheses it needs and no spaces: "(3+7)*25"."""
  return ast.unparse(tree).replace(" ", "")
