"""Check that microgpt_lib's imports point one way (python tools/layering.py: exit 1 if not).

    bench, machine     measuring primitives and this machine's facts: import no chapter
                       (machine may use bench; bench uses nothing)
    <topic>            what a chapter builds: may import bench, machine and other concepts
    <topic>_lab        how a chapter measures it: may import the above, not another lab
    suites             the suite table and the command line: names the labs as strings only
    notebooks          import anything but suites (its edits must stale no stored output)

An import inside ``if __name__ == "__main__":`` is how a module runs as a script, not a
dependency, and is not counted.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "microgpt_lib"
LEAVES = {"bench": set(), "machine": {"bench"}, "show": set()}


def _is_main_guard(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def imported_modules(source: str) -> set[str]:
    """The microgpt_lib modules a module's source imports (by name, without the package)."""
    found: set[str] = set()
    tree = ast.parse(source)
    stack: list[ast.AST] = [n for n in tree.body if not _is_main_guard(n)]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    found.add(alias.name.split(".")[1])
        elif isinstance(node, ast.ImportFrom):
            relative = node.level == 1
            if relative or node.module == PACKAGE:
                if node.module and relative:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith(PACKAGE + "."):
                found.add(node.module.split(".")[1])
        stack.extend(ast.iter_child_nodes(node))
    return found


def allowed(module: str, target: str) -> bool:
    """May ``module`` import ``target``?"""
    if module in LEAVES:
        return target in LEAVES[module]
    if target == "suites" or target == module:
        return False
    if module == "suites":
        return target in LEAVES
    if target.endswith("_lab"):
        return False  # a concept never imports a lab, and a lab no other lab
    return True


def violations(
    package: Path = ROOT / PACKAGE, notebooks: Path = ROOT / "notebooks"
) -> list[str]:
    """Every import that points the wrong way, as 'a imports b' sentences."""
    found = []
    for path in sorted(package.glob("*.py")):
        module = path.stem
        if module == "__init__":
            continue
        for target in sorted(imported_modules(path.read_text())):
            if not allowed(module, target):
                found.append(f"{PACKAGE}/{path.name} imports {target}")
    suites = re.compile(rf"\b{PACKAGE}\.suites\b|from {PACKAGE} import [^\n]*\bsuites\b")
    for path in sorted(notebooks.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        if suites.search(code):
            found.append(f"notebooks/{path.name} imports suites")
    return found


def main() -> int:
    found = violations()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
