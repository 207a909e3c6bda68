"""The two import rules docs/architecture.md states, checked on the source (ast):
- no module of monitor/ imports alerts except monitor/app.py, the composition root;
- the pure modules (monitor/model.py, monitor/spend.py, alerts/detection/*) load nothing of the
  relay layer, HTTP clients or the database, not even through the modules they import."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSITION_ROOT = "monitor.app"
PURE = ("monitor.model", "monitor.spend", "alerts.detection")
# The relay layer and what it stands on: HTTP clients and the database.
HEAVY = ("monitor.providers", "httpx", "httpx_aiohttp", "aiohttp", "sqlalchemy", "sqlmodel")


def module_file(name: str) -> Path | None:
    """The source of a keywatch module or package, or None for anything else."""
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def modules(package: str) -> list[str]:
    """The package and every module below it, dotted."""
    base = ROOT.joinpath(*package.split("."))
    return sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in base.rglob("*.py")
    )


@functools.cache
def imports(name: str) -> frozenset[str]:
    """Every module `name` imports anywhere in its source (top level, in functions, guarded),
    relative imports resolved, `from pkg import sub` counted as importing pkg.sub."""
    source = module_file(name)
    assert source is not None, name
    package = name if source.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}"))
    return frozenset(found)


def _with_parents(name: str) -> Iterator[str]:
    """Importing a.b.c runs a, a.b and a.b.c."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def loaded_by(name: str) -> set[str]:
    """Every module importing `name` loads: keywatch's own followed through, others as named."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        for module in {current, *(imports(current) if module_file(current) else ())}:
            for each in _with_parents(module):
                if each not in seen:
                    seen.add(each)
                    if module_file(each):
                        todo.append(each)
    return seen


def is_heavy(module: str) -> bool:
    return any(module == h or module.startswith(h + ".") for h in HEAVY)


def pure_modules() -> list[str]:
    out: set[str] = set()
    for name in PURE:
        source = module_file(name)
        assert source is not None, name
        out.update(modules(name) if source.name == "__init__.py" else [name])
    return sorted(out)


def test_the_walker_sees_what_is_there() -> None:
    """Not vacuous: the composition root does reach alerts and httpx, the store sqlalchemy."""
    assert {"alerts.engine", "alerts.api", "httpx"} <= loaded_by(COMPOSITION_ROOT)
    assert "sqlalchemy" in loaded_by("monitor.store")
    assert "monitor.providers.base" in imports("monitor.poller")
    assert "monitor.simulator.faults" in imports("monitor.simulator")  # `from .faults import ...`
    assert len(pure_modules()) >= 9


@pytest.mark.parametrize("module", [m for m in modules("monitor") if m != COMPOSITION_ROOT])
def test_monitor_never_imports_alerts_outside_the_composition_root(module: str) -> None:
    assert sorted(m for m in imports(module) if m == "alerts" or m.startswith("alerts.")) == []


@pytest.mark.parametrize("module", pure_modules())
def test_pure_modules_load_no_relay_code_http_client_or_database(module: str) -> None:
    assert sorted(m for m in loaded_by(module) if is_heavy(m)) == []


def test_importing_the_pure_modules_really_loads_none_of_it() -> None:
    """The same at run time, in a fresh interpreter: what ast cannot see (a package's own
    imports done by a library) would show here."""
    code = (
        "import sys\n"
        f"for m in {pure_modules()!r}: __import__(m)\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
