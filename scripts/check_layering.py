"""Print the import layering of the packages and fail on an import cycle or an import that points upward.

    python scripts/check_layering.py            # the graph, then the violations; exit 1 if any

Every ``import`` counts, at module level or inside a function. A unit is a subpackage of ``seed_asr``
(``seed_asr.data``), a module directly in it (``seed_asr.train``), or the ``decoupleq`` library. A unit
may import units of its own floor or below (:data:`FLOORS`, ground floor first) and nothing else.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("seed_asr", "decoupleq")

#: Ground floor first. decoupleq stands alone: it imports no seed_asr unit.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("decoupleq",),
    ("seed_asr.utils",),
    ("seed_asr.text",),
    ("seed_asr.metrics", "seed_asr.losses"),
    ("seed_asr.models",),
    ("seed_asr.corpus", "seed_asr.data", "seed_asr.decoding"),
    ("seed_asr.artifacts",),
    ("seed_asr.quant",),
    ("seed_asr.strategies", "seed_asr.lit", "seed_asr.callbacks"),
    ("seed_asr.config",),
    ("seed_asr.train", "seed_asr.eval", "seed_asr.export", "seed_asr.transcribe", "seed_asr.quantize",
     "seed_asr.shards"),
    ("seed_asr.demo",),
    ("seed_asr.cli", "seed_asr.testing", "seed_asr"),
)


def unit_of(module: str) -> str | None:
    """The unit a dotted module name belongs to (None: outside the project)."""
    parts = module.split(".")
    if parts[0] == "decoupleq":
        return "decoupleq"
    if parts[0] != "seed_asr":
        return None
    return ".".join(parts[:2])


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Dotted names of every module ``path`` imports (relative imports resolved)."""
    return imports_of_source(path.read_text(encoding="utf-8"), path)


def imports_of_source(source: str, path: Path, modules: set[str] | None = None) -> set[str]:
    """Dotted names ``source`` (the text of the file at ``path``) imports.

    ``from a import b`` gives ``a`` and ``a.b``; with the set of project ``modules`` it gives ``a.b``
    when that is a module and ``a`` otherwise (what the statement really loads).
    """
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                name = f"{base}.{alias.name}"
                if modules is None:
                    found.update((base, name))
                else:
                    found.add(name if name in modules else base)
    return found


def module_graph() -> dict[str, dict[str, set[str]]]:
    """Project module -> project module it imports -> the importing file."""
    paths = {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for module, path in sorted(paths.items()):
        for name in imports_of_source(path.read_text(encoding="utf-8"), path, set(paths)):
            if name in paths and name != module:
                graph[module][name].add(path.relative_to(ROOT).as_posix())
    return graph


def unit_graph() -> dict[str, dict[str, set[str]]]:
    """unit -> imported unit -> the files that import it."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = unit_of(_module_name(path))
            for name in imports_of(path):
                target = unit_of(name)
                if source and target and target != source:
                    graph[source][target].add(path.relative_to(ROOT).as_posix())
    return graph


def floor_of(unit: str) -> int | None:
    return next((level for level, units in enumerate(FLOORS) if unit in units), None)


def violations(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    """Units with no floor, imports that point upward, and cycles between units."""
    found = []
    units = set(graph) | {t for targets in graph.values() for t in targets}
    found += [f"{unit} has no floor in FLOORS" for unit in sorted(units) if floor_of(unit) is None]
    for source, targets in sorted(graph.items()):
        for target, files in sorted(targets.items()):
            low, high = floor_of(source), floor_of(target)
            if low is not None and high is not None and high > low:
                found.append(f"upward: {source} (floor {low}) imports {target} (floor {high}) in "
                             f"{', '.join(sorted(files))}")
    found += [f"cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def module_violations() -> list[str]:
    """Import cycles between modules (also inside one unit)."""
    return [f"module cycle: {' -> '.join(cycle)}" for cycle in cycles(module_graph())]


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """One cycle per strongly connected group of two or more units (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for target in graph.get(unit, {}):
            if target not in index:
                visit(target)
                low[unit] = min(low[unit], low[target])
            elif target in stack:
                low[unit] = min(low[unit], index[target])
        if low[unit] == index[unit]:
            group = []
            while (member := stack.pop()) != unit:
                group.append(member)
            group.append(unit)
            if len(group) > 1:
                groups.append(sorted(group))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return [[*group, group[0]] for group in groups]


def main() -> int:
    graph = unit_graph()
    for level, units in enumerate(FLOORS):
        for unit in units:
            targets = sorted(graph.get(unit, {}))
            print(f"{level:2d} {unit:26s} -> {', '.join(targets) or '-'}")
    found = violations(graph) + module_violations()
    print(*found, sep="\n")
    print(f"{len(found)} layering violation(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
