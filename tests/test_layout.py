"""The per-family layout's import rules, read from the source (nothing is imported or run).

No shared module imports a model family (the registry is the one door), no family imports
another except the U-GAT-IT variants -> ugatit, and there is no import cycle (function-local imports
count; a package's ``__init__`` re-exports do not).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "unpaired"
FAMILIES = {path.parent.name for path in (PACKAGE / "models").glob("*/__init__.py")}
ALLOWED_FAMILY_IMPORTS = {("photo2cartoon", "ugatit"), ("ugatit_tf", "ugatit")}  # variants of U-GAT-IT


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(name: str, path: Path) -> set[str]:
    """The unpaired modules ``name`` imports anywhere in its source, resolved to modules that exist."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = name.split(".") if is_package else name.split(".")[:-1]
            base = ".".join(parts[:len(parts) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module or ""
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("unpaired") and target != name:
                found.add(target)
    return found


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def family_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "models" and parts[2] in FAMILIES else None


def test_the_three_families_have_packages():
    assert {"ugatit", "photo2cartoon", "stargan_v2"} <= FAMILIES


def test_no_shared_module_imports_a_family():
    bad = [(name, target) for name, targets in GRAPH.items() for target in targets
           if not name.startswith("unpaired.models") and family_of(target)]
    assert bad == []


def test_families_import_no_other_family_except_ugatit_variants():
    bad = [(name, target) for name, targets in GRAPH.items() for target in targets
           if family_of(name) and family_of(target) and family_of(name) != family_of(target)
           and (family_of(name), family_of(target)) not in ALLOWED_FAMILY_IMPORTS]
    assert bad == []


def test_no_import_cycles():
    modules = {name for name, path in MODULES.items() if path.name != "__init__.py"}
    state: dict[str, str] = {}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH[name] & modules):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(modules):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_cli_modules_are_imported_by_no_library_module():
    entry_points = {"unpaired.__main__"}  # ``python -m unpaired`` runs the CLI
    bad = [(name, target) for name, targets in GRAPH.items() for target in targets
           if target.startswith("unpaired.cli") and not name.startswith("unpaired.cli") and name not in entry_points]
    assert bad == []
