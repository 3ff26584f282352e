"""The floor plan's rules, checked on the source (issue 15; docs/architecture.md draws them).

- No module imports another module's private name (`from x import _name`): make it public, or
  move the code to where it is used. Tests are held to the same rule.
- No import cycles between our modules, counting every import a module can run (function-local
  ones too; `if TYPE_CHECKING:` blocks never run and are left out).
- The import-linter contracts in pyproject.toml hold (`lint-imports`, also in `make lint`).

The first two read the code with `ast`, so they need no database and import nothing; each is
also run on a small tree written here with the fault planted, to show that it can fail.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
# The packages of ours: the ones the import contracts read (one list for both).
PACKAGES: tuple[str, ...] = tuple(
    tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
)
# Modules of ours that are not in a package.
LOOSE_MODULES = ("conftest", "manage")


def project_modules(
    root: Path, packages: Iterable[str], loose: Iterable[str] = ()
) -> dict[str, Path]:
    """Dotted name -> file, for every .py file of the packages (migrations included)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    for name in loose:
        if (root / f"{name}.py").is_file():
            modules[name] = root / f"{name}.py"
    return modules


def _is_package(modules: dict[str, Path], name: str) -> bool:
    return modules[name].name == "__init__.py"


def _from_module(modules: dict[str, Path], importer: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(modules, importer):
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_ours(name: str, packages: Iterable[str]) -> bool:
    return name.split(".")[0] in set(packages)


def private_imports(root: Path, modules: dict[str, Path], packages: Iterable[str]) -> list[str]:
    """`path:line: from x import _name` for each private name taken from another module of ours.

    A private submodule (`from pkg import _impl`) may be imported from inside its package."""
    found = []
    for importer, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            pairs: list[tuple[str, str]] = []
            if isinstance(node, ast.ImportFrom):
                source = _from_module(modules, importer, node)
                pairs = [(source, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parent, _, last = alias.name.rpartition(".")
                    if parent:
                        pairs.append((parent, last))
            for source, name in pairs:
                if not _is_ours(source, packages):
                    continue
                if not name.startswith("_") or name.startswith("__"):
                    continue
                submodule = f"{source}.{name}"
                if submodule in modules and (importer + ".").startswith(source + "."):
                    continue
                found.append(f"{path.relative_to(root)}:{node.lineno}: from {source} import {name}")
    return sorted(found)


def _runtime_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at module level, in classes and in functions,
    but not under `if TYPE_CHECKING:`."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _runtime_imports(node.orelse)
            continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _runtime_imports([child])
            elif isinstance(child, ast.excepthandler | ast.match_case):
                yield from _runtime_imports(child.body)


def _nearest_module(modules: dict[str, Path], name: str) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (a `from pkg import sub` names the submodule)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _runtime_imports(tree.body):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                source = _from_module(modules, importer, node)
                names = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    for alias in node.names
                ]
            for name in names:
                target = _nearest_module(modules, name)
                if target is not None and target != importer:
                    graph[importer].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, without recursion),
    each sorted: every cycle lies inside one of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def missing_modules(root: Path, modules: dict[str, Path], packages: Iterable[str]) -> list[str]:
    """`path:line: name` for each import of ours that names no module (a path left behind by
    a move): `from pkg import name` is fine when `name` is defined in `pkg`."""
    found = []
    for importer, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [_from_module(modules, importer, node)]
            else:
                continue
            for name in names:
                if _is_ours(name, packages) and name not in modules:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
    return sorted(found)


def lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "lint-imports"
    command = str(executable) if executable.exists() else shutil.which("lint-imports")
    assert command, "lint-imports is not installed (requirements.txt pins import-linter)"
    return subprocess.run(
        [command, "--no-cache", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# --- The project ------------------------------------------------------------------------------


def test_no_module_imports_a_private_name_of_another() -> None:
    modules = project_modules(PROJECT, PACKAGES, LOOSE_MODULES)
    assert len(modules) > 300  # the whole project was read
    found = private_imports(PROJECT, modules, PACKAGES)
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_every_import_of_ours_names_a_module_that_exists() -> None:
    modules = project_modules(PROJECT, PACKAGES, LOOSE_MODULES)
    found = missing_modules(PROJECT, modules, PACKAGES)
    assert not found, "imports of modules that do not exist:\n" + "\n".join(found)


def test_there_are_no_import_cycles_between_our_modules() -> None:
    modules = project_modules(PROJECT, PACKAGES, LOOSE_MODULES)
    graph = import_graph(modules)
    assert sum(len(targets) for targets in graph.values()) > 1000  # the imports were read
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_import_contracts_hold() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


# --- The checks themselves, on a small tree with the faults planted -----------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_private_import_check_finds_a_private_name_and_spares_the_rest(
    tmp_path: Path,
) -> None:
    _write(
        tmp_path,
        {
            "shop/__init__.py": "",
            "shop/_impl.py": "def _secret(): ...\n",
            "shop/prices.py": "from shop import _impl\nfrom shop._impl import __doc__\n",
            "shop/cart.py": (
                "from typing import _SpecialForm\n"  # not ours
                "from shop.prices import _rate, total\n"
                "def f():\n    from ._impl import _secret\n"
            ),
            "till/__init__.py": "",
            "till/screen.py": "import shop._impl\nfrom shop import _impl\n",
        },
    )
    modules = project_modules(tmp_path, ["shop", "till"])
    assert private_imports(tmp_path, modules, ["shop", "till"]) == [
        "shop/cart.py:2: from shop.prices import _rate",
        "shop/cart.py:4: from shop._impl import _secret",
        "till/screen.py:1: from shop import _impl",
        "till/screen.py:2: from shop import _impl",
    ]


def test_the_missing_module_check_finds_a_path_left_behind(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "shop/__init__.py": "",
            "shop/till/__init__.py": "",
            "shop/till/screen.py": "",
            "shop/cart.py": (
                "import shop.till.screen\nfrom shop.till import screen\n"
                "from . import till\nimport numpy\n"
                "def f():\n    from shop.old_till import screen\n    import shop.till.gone\n"
            ),
        },
    )
    modules = project_modules(tmp_path, ["shop"])
    assert missing_modules(tmp_path, modules, ["shop"]) == [
        "shop/cart.py:6: shop.old_till",
        "shop/cart.py:7: shop.till.gone",
    ]


def test_the_cycle_check_finds_a_cycle_through_a_function_local_import(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "shop/__init__.py": "",
            "shop/a.py": "from shop import b\n",
            "shop/b.py": "def f():\n    from .c import g\n",
            "shop/c.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from shop import d\n"
                "try:\n    import shop.a\nexcept ImportError:\n    pass\n"
            ),
            "shop/d.py": "import shop.c\n",
        },
    )
    graph = import_graph(project_modules(tmp_path, ["shop"]))
    assert graph["shop.b"] == {"shop.c"} and graph["shop.c"] == {"shop.a"}
    assert import_cycles(graph) == [["shop.a", "shop.b", "shop.c"]]
    graph["shop.b"].clear()
    assert import_cycles(graph) == []


def test_a_broken_contract_fails_lint_imports(tmp_path: Path) -> None:
    config = tmp_path / "contracts.ini"
    config.write_text(
        "[importlinter]\nroot_packages =\n    engine\n    imaging\n\n"
        "[importlinter:contract:planted]\nname = imaging may not use engine (planted)\n"
        "type = forbidden\nsource_modules = imaging\nforbidden_modules = engine\n"
    )
    result = lint_imports("--config", str(config))
    assert result.returncode != 0
    assert "imaging may not use engine (planted) BROKEN" in result.stdout
