"""The package's shape, read from the source: no import cycles, arrows only downward, small modules.

The import graph counts every ``import`` / ``from ... import`` in a module, function-level ones included, except
those under ``if TYPE_CHECKING:`` (annotations only, never executed); ``from package import name`` is an edge to
``package.name`` when that is a module, else to ``package``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fewshot"

#: layer of each top-level part; a module may import only its own layer or lower ones
LAYERS: dict[str, int] = {
    "errors": 0, "_core": 0, "_progress": 0,
    "_threads": 0,
    "templates": 1, "datasets": 1, "client": 1,
    "encoders": 2, "index": 2, "classifiers": 2,
    "openset": 3, "adapt": 3, "export": 3,
    "engine": 4,
    "training": 5, "evaluation": 5, "batch": 5,
    "cli": 6, "__main__": 6, "serve": 6,
}
RUN_TIME = ("errors", "_core", "_progress", "_threads", "templates", "datasets", "encoders", "index", "classifiers",
            "openset", "adapt", "export", "engine")
FACADE = PACKAGE / "engine" / "engine.py"


def module_name(path: Path) -> str:
    parts = ["fewshot", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path) -> set[str]:
    """fewshot modules that ``name`` imports (absolute names), anywhere in its source."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "fewshot")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "fewshot":
                continue
            for alias in node.names:
                out.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source)
    return {m for m in out if m in MODULES and m != name}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


GRAPH: dict[str, set[str]] = {name: imports_of(name, path) for name, path in MODULES.items()}


def part(module: str) -> str:
    return module.split(".")[1] if module != "fewshot" else "fewshot"


def test_the_graph_is_read_from_the_source():
    assert len(MODULES) > 40
    assert "fewshot.engine.engine" in GRAPH["fewshot.engine"]          # a relative-free re-export
    assert "fewshot.training.text_finetune" in GRAPH["fewshot.training.encoder_refine"]
    assert "fewshot.export" in GRAPH["fewshot.engine.persistence"]  # a function-level import
    assert "fewshot.engine.engine" not in GRAPH["fewshot.engine.persistence"]  # only under TYPE_CHECKING


def test_no_import_cycle():
    state: dict[str, int] = {}   # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " → ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_every_part_has_a_layer():
    assert {part(m) for m in MODULES} - {"fewshot"} <= set(LAYERS)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "fewshot"))
def test_arrows_point_down(module):
    """Each import goes to the same layer or a lower one; the run-time path never reaches training,
    evaluation or the CLI."""
    for target in GRAPH[module]:
        if target == "fewshot":
            pytest.fail(f"{module} imports the top-level package (import the module that defines it)")
        assert LAYERS[part(target)] <= LAYERS[part(module)], f"{module} → {target} points up"
        if part(module) in RUN_TIME:
            assert part(target) in RUN_TIME, f"run-time module {module} imports {target}"


def test_modules_stay_small():
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in MODULES.items()}
    assert sizes["fewshot.engine.engine"] <= 320, "the facade should stay about one screen of methods"
    too_big = {m: n for m, n in sizes.items() if n > 600}
    assert not too_big, f"modules over 600 lines: {too_big}"
