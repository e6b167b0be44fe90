"""Dependencies point down (docs/architecture.md): the library never reaches up into the CLI or
the views, `flow.ssh` knows nothing of tasks or health, the simulator shares no parsing code
with the GPUd client, and only the CLI and the views import rich. Every import is read from the
source, those inside functions included, so a lazy import cannot slip past."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
MODULES = sorted(SRC.joinpath("flow").rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; `from x import y` gives x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                name = module_name(path)
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(within: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{module_name(path)} imports {name}"
            for path in MODULES if under(module_name(path), *within)
            for name in sorted(imports(path)) if under(name, *forbidden)]


def test_the_modules_are_found() -> None:
    names = {module_name(p) for p in MODULES}
    assert {"flow.health.sweep.checker", "flow.health.collector.daemon", "flow.views.render"} <= names


@pytest.mark.parametrize(("within", "forbidden"), [
    # The library never reaches up into the command line or the terminal views.
    (("flow.health", "flow.fleet", "flow.ssh", "flow.config", "flow.errors", "flow.fs", "flow.grammar",
      "flow.secrets", "flow.text", "flow.http_deadline"), ("flow.cli", "flow.views")),
    # The views render what the library gives them; they never run a command.
    (("flow.views",), ("flow.cli",)),
    # SSH takes plain connection parameters: it knows nothing of tasks or health.
    (("flow.ssh",), ("flow.fleet", "flow.health")),
    # The simulator stands in for GPUd: it must not share the client's parsing (nor the reverse).
    (("flow.health.sim",), ("flow.health.gpud",)),
    (("flow.health.gpud",), ("flow.health.sim",)),
])
def test_dependencies_point_down(within: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    assert offenders(within, forbidden) == []


def test_only_the_cli_and_the_views_import_rich() -> None:
    bad = [f"{module_name(p)} imports {n}" for p in MODULES
           if not under(module_name(p), "flow.cli", "flow.views")
           for n in sorted(imports(p)) if under(n, "rich")]
    assert bad == []


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from flow.cli.main import main\n    return main\n")
    assert "flow.cli.main" in imports(sample)
