"""Turning notebook cells into activity and workflow functions.

``%%weft_activity train(epochs, lr=0.1)`` declares a signature; the cell body becomes a function of
those parameters, with ``activity`` (or ``ctx`` for a workflow) in scope, the notebook's globals
visible, and the value of the last expression returned, as a cell's output would be. The functions
built here go through `weft_nb.base.definitions.make_activity()` and ``make_workflow``, the same
builders the decorators use.
"""

from __future__ import annotations

import ast
import dataclasses
import keyword
import linecache
from collections.abc import Callable, Mapping
from typing import Any

from weft_nb.errors import CellDefinitionError

_MISSING: Any = object()


@dataclasses.dataclass(frozen=True)
class CellSignature:
    """``NAME(param, param=default)`` from a magic line."""

    name: str
    params: tuple[str, ...]
    defaults: Mapping[str, Any]

    def bind(self, value: Any, *, what: str) -> dict[str, Any]:
        """Bind an input to the parameters: a dict of keyword arguments, or one value.

        A one-parameter cell takes the value itself, unless it is a dict holding exactly that
        parameter's name. None means "no arguments" (every parameter needs a default).
        """
        params = self.params
        if len(params) == 1 and not (isinstance(value, dict) and set(value) == {params[0]}):
            if value is None and params[0] in self.defaults:
                return {params[0]: self.defaults[params[0]]}
            return {params[0]: value}
        given = {} if value is None else value
        if not isinstance(given, dict):
            raise TypeError(
                f"{what} takes keyword arguments {list(params)}: pass a dict, got "
                f"{type(value).__name__}"
            )
        unknown = set(given) - set(params)
        if unknown:
            raise TypeError(
                f"{what} got unknown argument(s) {sorted(unknown)}; it declares {list(params)}"
            )
        bound = {p: given.get(p, self.defaults.get(p, _MISSING)) for p in params}
        missing = [p for p, v in bound.items() if v is _MISSING]
        if missing:
            raise TypeError(f"{what} is missing argument(s) {missing}")
        return bound

    def describe(self) -> str:
        """``name(a, b=2)``."""
        parts = [p if p not in self.defaults else f"{p}={self.defaults[p]!r}" for p in self.params]
        return f"{self.name}({', '.join(parts)})"


def split_magic_line(line: str) -> tuple[str, str]:
    """Split ``NAME(params) --options`` into the signature text and the options text."""
    line = line.strip()
    if not line:
        raise CellDefinitionError("the magic needs a name, such as: train(epochs, lr=0.1)")
    depth = 0
    for index, char in enumerate(line):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0 and char == ")":
                return line[: index + 1], line[index + 1 :]
        elif char.isspace() and depth == 0:
            return line[:index], line[index:]
    return line, ""


def parse_signature(text: str, namespace: Mapping[str, Any], *, reserved: str) -> CellSignature:
    """Parse ``NAME`` or ``NAME(a, b=default)``; defaults are evaluated in ``namespace``."""
    source = text if "(" in text else f"{text}()"
    name = source.partition("(")[0].strip()
    if keyword.iskeyword(name):
        raise CellDefinitionError(
            f"{name!r} is a Python keyword, so it cannot name a function; choose another name "
            f"({name}_step)"
        )
    try:
        tree = ast.parse(f"def {source}: pass")
    except SyntaxError:
        raise CellDefinitionError(
            f"{text!r} is not a signature; write it like: train(epochs, lr=0.1)"
        ) from None
    func = tree.body[0]
    assert isinstance(func, ast.FunctionDef)
    args = func.args
    if args.vararg or args.kwarg or args.posonlyargs or args.kwonlyargs:
        raise CellDefinitionError(f"{text!r}: only plain parameters (a, b=default) are supported")
    params = tuple(a.arg for a in args.args)
    twice = sorted({p for p in params if params.count(p) > 1})
    if twice:
        raise CellDefinitionError(
            f"{text!r}: parameter {twice[0]!r} appears twice; give each parameter its own name"
        )
    if reserved in params:
        raise CellDefinitionError(
            f"{text!r}: {reserved!r} is provided by weft_nb; rename that parameter"
        )
    defaults = {}
    for param, node in zip(params[len(params) - len(args.defaults) :], args.defaults, strict=True):
        expression = ast.unparse(node)
        try:
            defaults[param] = eval(expression, dict(namespace))
        except Exception as exc:
            raise CellDefinitionError(
                f"default of {param!r} ({expression}) failed: {exc!r}"
            ) from None
    return CellSignature(func.name, params, defaults)


def compile_body(
    code: str, signature: CellSignature, *, first: str, filename: str, namespace: dict[str, Any]
) -> Callable[..., Any]:
    """Compile a cell body into ``f(first, *params)`` whose globals are ``namespace``.

    The last expression becomes the return value. A body that uses ``await``, ``async for`` or
    ``async with`` outside nested functions becomes an ``async def`` (an async activity, or an
    async workflow whose ``ctx`` calls are awaited). Raises
    [`CellDefinitionError`][weft_nb.errors.CellDefinitionError] for a syntax error, quoting the
    offending line.
    """
    try:
        tree = ast.parse(code, filename=filename)
    except SyntaxError as exc:
        line = (exc.text or "").rstrip()
        raise CellDefinitionError(
            f"syntax error in the cell, line {exc.lineno}: {exc.msg}\n    {line}"
        ) from None
    refuse_function_breakers(tree, kind="activity" if first == "activity" else "workflow")
    body = tree.body
    if body and isinstance(body[-1], ast.Expr):
        last = body[-1]
        body[-1] = ast.copy_location(ast.Return(value=last.value), last)
    define = "async def" if uses_await(tree) else "def"
    shell = ast.parse(f"{define} __weft_cell__({', '.join((first, *signature.params))}): pass")
    func = shell.body[0]
    assert isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
    func.body = body or [ast.Pass()]
    ast.fix_missing_locations(shell)
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    try:
        code_object = compile(shell, filename, "exec")
    except SyntaxError as exc:  # what only the compiler sees; the checks above name the usual
        raise CellDefinitionError(
            f"the cell cannot be compiled as a function body, line {exc.lineno}: {exc.msg}"
        ) from None
    scope: dict[str, Any] = {}
    exec(code_object, namespace, scope)
    compiled: Callable[..., Any] = scope["__weft_cell__"]
    compiled.__name__ = compiled.__qualname__ = signature.name
    return compiled


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _own_nodes(node: ast.AST) -> list[ast.AST]:
    """The nodes of the cell's own scope: nested functions, classes and lambdas left out."""
    found: list[ast.AST] = []
    for child in ast.iter_child_nodes(node):
        found.append(child)
        if not isinstance(child, _SCOPES):
            found.extend(_own_nodes(child))
    return found


def uses_await(tree: ast.Module) -> bool:
    """True when the cell's own scope awaits (``await``, ``async for``, ``async with``)."""
    return any(
        isinstance(node, ast.Await | ast.AsyncFor | ast.AsyncWith)
        or (isinstance(node, ast.comprehension) and bool(node.is_async))
        for node in _own_nodes(tree)
    )


def refuse_function_breakers(tree: ast.Module, *, kind: str) -> None:
    """Refuse what a cell may hold but a function body may not, or should not.

    The body runs as a function, so ``global``, ``nonlocal``, ``yield`` and ``from m import *``
    either do not compile there or change what the cell means. Each is a `CellDefinitionError`
    saying what to write instead. (A top-level ``await`` is no breaker: the body becomes an
    ``async def``, see `uses_await()`.)
    """
    for node in _own_nodes(tree):
        line = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Global):
            names = ", ".join(node.names)
            raise CellDefinitionError(
                f"{line}: `global {names}`: the {kind} body runs as a function, and a replayed "
                "step does not run it again, so it cannot set notebook variables; end the cell "
                "with the value (its last expression is the result) and assign the result "
                "outside (`%weft run ... --as VAR`)"
            )
        if isinstance(node, ast.Nonlocal):
            raise CellDefinitionError(
                f"{line}: `nonlocal {', '.join(node.names)}` has no enclosing function in the "
                f"{kind}'s cell; assign the name directly"
            )
        if isinstance(node, ast.Yield | ast.YieldFrom):
            raise CellDefinitionError(
                f"{line}: `yield` would make the {kind} a generator, and a generator is no "
                "result; collect the values in a list and end the cell with it"
            )
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            raise CellDefinitionError(
                f"{line}: `from {node.module or '.'} import *` is allowed only at module level; "
                "import the names you use, or import * in a plain cell (the notebook's globals "
                "are visible in the body)"
            )
