"""Generate docs/errors.md: every ErrorInfo ``reason`` the node can send, from its source code.

Run by ``make docs``; ``tests/unit/test_errors_catalogue.py`` fails when the committed file is
stale or a reason the code raises is missing from it. Reasons are found in the syntax tree of
every module of ``veil_server`` (nothing is imported):

- ``SomeError(message, reason="X")``: a literal reason given to a class of the exception tree;
- ``default_reason = "X"`` on a class of the tree;
- a function or class that passes one of its parameters on as ``reason=`` (``reject(reason,
  message)``, ``StartRefused(problem, ...)``), called with a literal in that position;
- ``return "X", "message"``: the (reason, message) pairs grant checks return, raised elsewhere
  as ``SomeError(pair[1], reason=pair[0])``.

The status code is the class's ``code`` (inherited along the tree), or a ``code=`` argument at
the call. The meaning and fix column is the message of the first place that raises it (an
f-string's fields shown as ``{…}``): the node's messages name the rule and the fix.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "server" / "veil_server"
OUTPUT = ROOT / "docs" / "errors.md"
REASON = re.compile(r"^[A-Z][A-Z0-9_]{2,}$")


@dataclass
class Site:
    code: str
    message: str
    where: str


@dataclass
class Catalogue:
    reasons: dict[str, list[Site]] = field(default_factory=dict)

    def add(self, reason: str, site: Site) -> None:
        if REASON.match(reason):
            self.reasons.setdefault(reason, []).append(site)


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        out.append((rel, ast.parse(path.read_text(encoding="utf-8"), filename=rel)))
    return out


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _text(node: ast.expr | None) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{…}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    return ""


def _classes(modules) -> dict[str, tuple[list[str], str | None, str | None]]:
    """name -> (base names, own code, own default_reason)."""
    out = {}
    for _rel, tree in modules:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                code = reason = None
                for stmt in node.body:
                    target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else \
                        stmt.target if isinstance(stmt, ast.AnnAssign) else None
                    value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
                    if not isinstance(target, ast.Name) or value is None:
                        continue
                    if target.id == "code" and isinstance(value, ast.Attribute):
                        code = value.attr
                    if target.id == "default_reason" and isinstance(value, ast.Constant):
                        reason = value.value
                out[node.name] = ([n for n in map(_name, node.bases) if n], code, reason)
    return out


def build() -> Catalogue:
    modules = _modules()
    classes = _classes(modules)

    def in_tree(name: str | None, seen=()) -> bool:
        if name is None or name not in classes or name in seen:
            return False
        return name == "VeilError" or any(in_tree(b, seen + (name,)) for b in classes[name][0])

    def code_of(name: str, seen=()) -> str:
        bases, code, _ = classes.get(name, ([], None, None))
        if code:
            return code
        for b in bases:
            if b not in seen:
                found = code_of(b, seen + (name,))
                if found:
                    return found
        return ""

    cat = Catalogue()
    for rel, tree in modules:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and in_tree(node.name) and classes[node.name][2]:
                doc = ast.get_docstring(node) or ""
                cat.add(classes[node.name][2], Site(code_of(node.name), doc.split("\n\n")[0].replace("\n", " "), rel))

    # Callables that pass a parameter on as reason=: name -> (parameter index, its name, class).
    relays: dict[str, tuple[int, str, str]] = {}
    for rel, tree in modules:
        for owner in ast.walk(tree):
            if not isinstance(owner, (ast.FunctionDef, ast.ClassDef)):
                continue
            fn = owner if isinstance(owner, ast.FunctionDef) else next(
                (s for s in owner.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"), None)
            if fn is None:
                continue
            params = [a.arg for a in fn.args.args + fn.args.kwonlyargs]
            for call in ast.walk(fn):
                if not isinstance(call, ast.Call):
                    continue
                target = _name(call.func)
                is_super = isinstance(call.func, ast.Attribute) and call.func.attr == "__init__"
                for kw in call.keywords:
                    if kw.arg == "reason" and isinstance(kw.value, ast.Name) and kw.value.id in params:
                        cls = owner.name if is_super and isinstance(owner, ast.ClassDef) else target
                        if cls and (in_tree(cls) or is_super):
                            index = params.index(kw.value.id) - (1 if params and params[0] == "self" else 0)
                            relays[owner.name] = (index, kw.value.id, cls)
    pair_codes = set()
    for rel, tree in modules:
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and in_tree(_name(call.func)):
                for kw in call.keywords:
                    if kw.arg == "reason" and isinstance(kw.value, ast.Subscript):
                        pair_codes.add(code_of(_name(call.func)))

    for rel, tree in modules:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                target = _name(node.func)
                explicit = next((kw.value for kw in node.keywords if kw.arg == "code"), None)
                if target and in_tree(target):
                    for kw in node.keywords:
                        if kw.arg != "reason":
                            continue
                        # reason="X", or a relayed reason with a literal fallback (`r or "X"`)
                        options = kw.value.values if isinstance(kw.value, ast.BoolOp) else [kw.value]
                        for value in options:
                            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                                code = explicit.attr if isinstance(explicit, ast.Attribute) else code_of(target)
                                cat.add(value.value, Site(code, _text(node.args[0]) if node.args else "", rel))
                if target in relays:
                    index, pname, cls = relays[target]
                    literal = node.args[index] if index < len(node.args) else next(
                        (kw.value for kw in node.keywords if kw.arg == pname), None)
                    if isinstance(literal, ast.Constant) and isinstance(literal.value, str):
                        code = explicit.attr if isinstance(explicit, ast.Attribute) else code_of(cls)
                        message = next((_text(a) for a in node.args if a is not literal and _text(a)), "")
                        cat.add(literal.value, Site(code, message, rel))
            elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 2:
                first, second = node.value.elts
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and REASON.match(first.value) \
                        and _text(second):
                    code = pair_codes.pop() if len(pair_codes) == 1 else "PERMISSION_DENIED"
                    pair_codes.add(code)
                    cat.add(first.value, Site(code, _text(second), rel))
    return cat


def render(cat: Catalogue) -> str:
    lines = [
        "# Error reasons",
        "",
        "<!-- Generated by `make docs` (docs/errors_catalogue.py) from the node's source; do not edit. -->",
        "",
        "Every refusal a node sends is a gRPC status whose details hold a `google.rpc.ErrorInfo` with",
        "domain `veil.dev` and one of the reasons below (stable: a reason is never renamed). Refusals",
        "that say when to retry also carry `google.rpc.RetryInfo`. A few reasons (`START_REFUSED`, the",
        "`LOG_*` and `STATE_*` ones) refuse a node's start and reach the operator as one line on",
        "stderr rather than a caller. The message column is the message",
        "of the first place in the code that raises the reason (`{…}` marks a field filled in at run",
        "time, never a data value); it names the rule and the fix. A reason raised in several places",
        "lists each status code it can come with.",
        "",
        f"{len(cat.reasons)} reasons.",
        "",
        "| reason | status code | meaning and fix | raised in |",
        "|---|---|---|---|",
    ]
    for reason in sorted(cat.reasons):
        sites = cat.reasons[reason]
        codes = sorted({s.code for s in sites if s.code}) or ["(per call)"]
        message = next((s.message for s in sites if s.message), "")
        message = " ".join(message.split()).replace("|", "\\|")
        where = sorted({s.where.removeprefix("veil_server/") for s in sites})
        lines.append(f"| `{reason}` | {', '.join(codes)} | {message} | {', '.join(f'`{w}`' for w in where)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render(build())
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(build().reasons)} reasons)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
