"""The planner's shared reading of the sqlglot AST, and the refusals it raises.

Every part of the planner reads nodes the same way (brackets unwrapped, unknown arguments
refused) and refuses the same way: a ``QueryRejected`` (outside the subset: INVALID_ARGUMENT) or a
``PolicyViolation`` (a column control forbids it: PERMISSION_DENIED) with a stable reason. Messages
name the rule, the column or construct and the fix, and never a literal value.
"""

from __future__ import annotations

from typing import NoReturn

from sqlglot import exp

from veil_server.query.catalog import Column
from veil_server.errors import PolicyViolation, QueryRejected

__all__ = ["construct_name", "contains", "deny", "extra_args", "reject", "short",
           "unparen", "unsupported"]


def reject(reason: str, message: str, **meta: str) -> NoReturn:
    raise QueryRejected(message, reason=reason, metadata=meta)


def deny(reason: str, message: str, column: Column) -> NoReturn:
    raise PolicyViolation(message, reason=reason, metadata={"column": column.name})


def short(text: object) -> str:
    """An identifier or keyword for a message: truncated, so a huge name cannot flood logs."""
    s = str(text)
    return s if len(s) <= 64 else s[:61] + "..."


def construct_name(node: exp.Expr | None) -> str:
    if not isinstance(node, exp.Expr):  # a missing operand the parser let through
        return "EXPRESSION"
    if isinstance(node, exp.Anonymous):
        return short(node.name).upper()
    if isinstance(node, exp.Cast):
        return "CAST"
    if isinstance(node, exp.Func):
        return short(node.sql_name())
    if isinstance(node, exp.Command):
        return short(node.this).upper()
    return node.key.upper()


def unsupported(node: exp.Expr | None, where: str) -> NoReturn:
    """The refusal for a node the allow-list does not know in this position."""
    construct = construct_name(node)
    if isinstance(node, exp.Func) and not isinstance(node, (exp.Floor, exp.Case, exp.If)):
        reject("FUNCTION_NOT_ALLOWED",
               f"{construct} is not an allowed function in {where}; the subset allows COUNT, SUM, "
               "AVG, VARIANCE/VAR_SAMP, STDDEV/STDDEV_SAMP and FLOOR(column / width) * width.",
               construct=construct)
    if isinstance(node, exp.Star):
        reject("SELECT_STAR", "* is not allowed: name the aggregates to compute, e.g. COUNT(*).",
               construct="*")
    reject("UNSUPPORTED_EXPRESSION",
           f"{construct} is not supported in {where}; use bare columns, literals, the allowed "
           "aggregates and the bin pattern FLOOR(column / width) * width.", construct=construct)


def unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):  # bracket nesting is bounded before parsing
        node = node.this
    return node


def contains(node: exp.Expr, kind: type | tuple[type, ...]) -> exp.Expr | None:
    for sub in node.walk(bfs=False):  # iterative: AND chains make left-deep trees
        if isinstance(sub, kind):
            return sub
    return None


def extra_args(node: exp.Expr, allowed: set[str]) -> str | None:
    """The first argument ``node`` carries beyond ``allowed`` (flags set to False don't count)."""
    for key, value in node.args.items():
        if key in allowed or value is None or value is False:
            continue
        if isinstance(value, (list, str)) and not value:
            continue
        return key
    return None
