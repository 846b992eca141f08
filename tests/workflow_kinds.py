"""Both kinds of workflow from one test: a sync workflow and its ``async def`` twin (issue 15).

`asyncify` rewrites a plain ``def`` workflow into ``async def``: each durable call on its ``ctx``
(``ctx.run``, ``ctx.all``, ``ctx.race``, ``ctx.run_all``, ``ctx.sleep``, ``ctx.wait_for_signal``,
``ctx.memo``, ``ctx.compensate``) and each ``future.result()`` is awaited; ``ctx.submit`` and
``ctx.now`` stay plain calls, as in the async API. The twin shares the original's closure cells,
globals, file and line numbers, so a test's workflow is the same program in both kinds.

The ``workflow_kind`` fixture (tests/conftest.py) runs a test module once per kind: with
``async``, ``weft_nb.workflow`` is patched to register the twin.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
from collections.abc import Callable
from typing import Any

AWAITED = {
    "run",
    "all",
    "race",
    "run_all",
    "sleep",
    "wait_for_signal",
    "memo",
    "compensate",
    "run_workflow",
}


class _AwaitDurableCalls(ast.NodeTransformer):
    def __init__(self, ctx_name: str) -> None:
        self.ctx_name = ctx_name

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        if not isinstance(func, ast.Attribute):
            return node
        on_ctx = isinstance(func.value, ast.Name) and func.value.id == self.ctx_name
        if on_ctx and func.attr in AWAITED:
            return ast.copy_location(ast.Await(value=node), node)
        if func.attr == "result" and not node.args and not node.keywords and not on_ctx:
            return ast.copy_location(ast.Await(value=func.value), node)  # future.result()
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return node  # a nested function is not the workflow: leave it alone

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        return node


def asyncify(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``async def`` twin of the sync workflow ``fn`` (see the module docstring)."""
    code = fn.__code__
    source = textwrap.dedent(inspect.getsource(fn))
    tree = ast.parse(source)
    func = tree.body[0]
    assert isinstance(func, ast.FunctionDef), f"{fn.__name__} is not a plain def"
    ctx_name = func.args.args[0].arg
    for arg in [*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs]:
        arg.annotation = None  # the original's annotations are copied over as they are
    body = [_AwaitDurableCalls(ctx_name).visit(stmt) for stmt in func.body]
    twin = ast.AsyncFunctionDef(
        name=func.name,
        args=func.args,
        body=body,
        decorator_list=[],
        returns=None,
        type_comment=None,
    )
    free = list(code.co_freevars)
    # A factory binding the free names, so the twin's code refers to them as closure cells.
    factory = ast.FunctionDef(
        name="__factory__",
        args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
        body=[
            *[
                ast.Assign(targets=[ast.Name(id=n, ctx=ast.Store())], value=ast.Constant(None))
                for n in free
            ],
            twin,
            ast.Return(value=ast.Name(id=func.name, ctx=ast.Load())),
        ],
        decorator_list=[],
        returns=None,
        type_comment=None,
    )
    module = ast.Module(body=[factory], type_ignores=[])
    ast.fix_missing_locations(module)
    ast.increment_lineno(module, code.co_firstlineno - 1)  # line 1 is the first decorator's
    namespace: dict[str, Any] = {}
    exec(compile(module, code.co_filename, "exec"), fn.__globals__, namespace)
    made = namespace["__factory__"]()
    cells = dict(zip(code.co_freevars, fn.__closure__ or (), strict=True))
    twin_code = made.__code__
    closure = tuple(cells[name] for name in twin_code.co_freevars)
    result = types.FunctionType(twin_code, fn.__globals__, fn.__name__, fn.__defaults__, closure)
    result.__kwdefaults__ = fn.__kwdefaults__
    result.__annotations__ = dict(fn.__annotations__)
    result.__qualname__ = fn.__qualname__
    result.__module__ = fn.__module__
    return result


def workflow_decorator(kind: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``weft_nb.workflow`` for ``kind``: the original for ``sync``; the twin's for ``async``."""
    if kind == "sync":
        return original

    def workflow(fn: Any = None, /, **options: Any) -> Any:
        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            return original(asyncify(func), **options)  # type: ignore[no-any-return]

        return decorate(fn) if fn is not None else decorate

    return workflow
