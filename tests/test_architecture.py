"""The package's shape (docs/architecture.md): what import-linter's contracts cannot say.

`lint-imports` (in `make test`) checks the layers. These tests read every module of ``weft_nb``
with :mod:`ast`, imports under ``TYPE_CHECKING`` and inside functions included, and check:
no import cycle anywhere; no underscore name imported from, or read off, another module; the
``Engine`` named in ``engine/`` by ``engine/engine.py`` alone; no ``# fmt: skip``; modules of a
readable size; no object reaching into another's private state; ``py.typed`` shipped.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "weft_nb"
MAX_MODULE_LINES = 400
# Modules allowed past the limit, and why. Keep this short: a long module usually holds two jobs.
LONG_MODULES = {
    # One job: the catalogue of every exception and warning a user catches, each building its own
    # message from structured arguments. Users read it in one place (the API reference's errors
    # page), as Temporal's ``exceptions.py`` and DBOS's ``_error.py``; splitting it by topic would
    # spread one table over five files.
    "weft_nb.errors": 1050,  # 59 classes, about 17 lines each (message, fields, docstring)
}


@dataclass
class Module:
    """One module of the package: its dotted name, file, syntax tree and what it imports."""

    name: str
    path: Path
    tree: ast.Module
    imports: dict[str, int] = field(default_factory=dict)  # imported module -> first line
    module_aliases: set[str] = field(default_factory=set)  # local names bound to our modules


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _read_package() -> dict[str, Module]:
    modules = {
        _dotted(p): Module(_dotted(p), p, ast.parse(p.read_text(), str(p)))
        for p in sorted(PACKAGE.rglob("*.py"))
    }
    for module in modules.values():
        for node in ast.walk(module.tree):
            for target, bound in _import_targets(module, node, modules):
                module.imports.setdefault(target, node.lineno)
                if bound is not None:
                    module.module_aliases.add(bound)
    return modules


def _import_targets(
    module: Module, node: ast.AST, modules: dict[str, Module]
) -> Iterator[tuple[str, str | None]]:
    """(imported module of ours, the local name bound to it if it is a module) per import."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in modules:
                yield alias.name, alias.asname
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            package = module.name.split(".")
            if module.path.name != "__init__.py":
                package.pop()
            package = package[: len(package) - node.level + 1]
            source = ".".join([*package, *([node.module] if node.module else [])])
        else:
            source = node.module or ""
        if source not in modules:
            return
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            if submodule in modules:
                yield submodule, alias.asname or alias.name
            else:
                yield source, None


MODULES = _read_package()


def _cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in modules[name].imports:
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == name:
                    break
            if len(component) > 1 or name in modules[name].imports:
                found.append(sorted(component))

    for name in modules:
        if name not in index:
            visit(name)
    return found


def test_no_import_cycle() -> None:
    cycles = _cycles(MODULES)
    described = [
        " -> ".join(
            f"{m} (imports {', '.join(t for t in MODULES[m].imports if t in cycle)})" for m in cycle
        )
        for cycle in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_the_cycle_check_sees_a_cycle() -> None:
    """The check above catches a cycle made of a lazy import and a TYPE_CHECKING one."""
    a = Module("weft_nb.a", PACKAGE / "a.py", ast.parse("def f():\n    from weft_nb import b\n"))
    b = Module(
        "weft_nb.b",
        PACKAGE / "b.py",
        ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import weft_nb.a\n"),
    )
    fake = {"weft_nb": Module("weft_nb", PACKAGE / "__init__.py", ast.parse("")), "weft_nb.a": a}
    fake["weft_nb.b"] = b
    for module in (a, b):
        for node in ast.walk(module.tree):
            for target, _ in _import_targets(module, node, fake):
                module.imports.setdefault(target, node.lineno)
    assert _cycles(fake) == [["weft_nb.a", "weft_nb.b"]]


def _underscore_uses(module: Module) -> Iterator[str]:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("weft_nb"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield f"line {node.lineno}: from {node.module} import {alias.name}"
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in module.module_aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            yield f"line {node.lineno}: {node.value.id}.{node.attr}"


def test_no_module_uses_another_modules_underscore_names() -> None:
    uses = {name: list(_underscore_uses(m)) for name, m in MODULES.items()}
    uses = {name: found for name, found in uses.items() if found}
    assert not uses, f"underscore names used across modules (make them public): {uses}"


# Underscore names that are other libraries' protocols, not someone's private state.
FOREIGN_PROTOCOLS = re.compile(r"^_repr_\w+_$|^_getframe$|^_exit$|^_replace$|^_asdict$|^_fields$")


def _private_reaches(tree: ast.AST) -> Iterator[str]:
    """``x._name`` where ``x`` is not ``self`` or ``cls``: one object reaching into another."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")):
            continue
        if node.attr.startswith("__") or FOREIGN_PROTOCOLS.match(node.attr):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        yield f"line {node.lineno}: {ast.unparse(node)}"


def test_no_object_reaches_into_another() -> None:
    reaches = {name: list(_private_reaches(m.tree)) for name, m in MODULES.items()}
    reaches = {name: found for name, found in reaches.items() if found}
    assert not reaches, f"private state read or written from outside its object: {reaches}"


def test_the_reach_check_sees_a_reach() -> None:
    source = (
        "def settle(handle, state):\n"
        "    handle._state = state\n"
        "    state.handle._settle()\n"
        "    self._ok = widget._repr_html_()\n"
    )
    assert [f.split(":")[0] for f in _private_reaches(ast.parse(source))] == ["line 2", "line 3"]


def _names_engine(tree: ast.AST) -> Iterator[int]:
    word = re.compile(r"\bEngine\b")
    for node in ast.walk(tree):
        annotation = None
        if isinstance(node, ast.arg | ast.AnnAssign):
            annotation = node.annotation
        elif isinstance(node, ast.FunctionDef):
            annotation = node.returns
        named = (isinstance(node, ast.Name) and node.id == "Engine") or (
            isinstance(node, ast.alias) and "Engine" in (node.name, node.asname)
        )
        if named or (annotation is not None and word.search(ast.unparse(annotation))):
            yield node.lineno


def test_only_engine_py_names_the_engine_inside_engine() -> None:
    naming = {
        name: sorted(set(_names_engine(m.tree)))
        for name, m in MODULES.items()
        if name.startswith("weft_nb.engine.") and name != "weft_nb.engine.engine"
    }
    naming = {name: lines for name, lines in naming.items() if lines}
    assert not naming, f"run code must receive a Runtime, not the Engine: {naming}"


def test_the_engine_check_sees_a_type_checking_import() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from weft_nb.engine.engine import Engine\n"
        "def run(engine: 'Engine') -> None: ...\n"
    )
    assert sorted(set(_names_engine(ast.parse(source)))) == [3, 4]


def test_no_formatter_escapes() -> None:
    marked = [
        f"{m.path.relative_to(PACKAGE.parent)}:{number}"
        for m in MODULES.values()
        for number, line in enumerate(m.path.read_text().splitlines(), 1)
        if "fmt: skip" in line or "fmt: off" in line
    ]
    assert not marked, f"records and steps take keywords; the formatter decides layout: {marked}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_readable(name: str) -> None:
    lines = len(MODULES[name].path.read_text().splitlines())
    limit = LONG_MODULES.get(name, MAX_MODULE_LINES)
    assert lines <= limit, f"{name} has {lines} lines: split it by job"


def test_type_information_ships() -> None:
    assert (PACKAGE / "py.typed").is_file()


def test_every_module_is_on_the_architecture_page() -> None:
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    missing = [
        relative
        for module in MODULES.values()
        if f"`{(relative := module.path.relative_to(PACKAGE).as_posix())}`" not in page
    ]
    assert not missing, f"say in one line in docs/architecture.md what these modules do: {missing}"
