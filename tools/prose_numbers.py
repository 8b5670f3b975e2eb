"""Find measured-looking figures typed into the notebooks' prose (python tools/prose_numbers.py).

A re-run must never contradict the text, so the prose never types a number that a cell
measured: it glues it from that cell (myst-nb's ``{glue:text}`name``` role), or lets the cell
print it. A figure is measured-looking when it carries a unit of time, rate or size (ns, µs,
ms, GFLOP/s, TFLOP/s, GB/s, MB/s, KiB, MiB, GiB, KB, MB, GB), is a ratio ("12x", "3.5×",
"20 times faster", "hundreds of times slower") or a share of a yardstick ("85% of the peak").
It is allowed:

- inside a glue role, inline code, a code block or math;
- in a paragraph that cites its source with ``{cite}``/``{cite:p}``/``{cite:t}``: a published
  figure, not one of ours.

Exit status 1 lists each finding as "notebook: cell N: ...figure...".
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

UNITS = r"(?:ns|µs|μs|us|ms|[GT]FLOP/s|[GMk]B/s|[KMG]iB|[KMG]B)"
NUMBER = r"(?<![\w.,])\d[\d,]*(?:\.\d+)?"
SPELLED = (
    r"(?i:\b(?:two|three|four|five|six|seven|eight|nine|ten|twenty|fifty|a\s+hundred"
    r"|hundreds|a\s+thousand|thousands))"
)
FIGURE = re.compile(
    rf"{NUMBER}\s*{UNITS}(?![\w/])"  # 3.2 ms, 58 GFLOP/s, 32 KiB
    rf"|{NUMBER}\s*[x×](?!\w|\s*\d)"  # 12x, 3.5× (not 4x4, not 16 × 16)
    rf"|(?:{NUMBER}|{SPELLED})\s+(?:of\s+)?times\s+(?:faster|slower|more|less|as|the)\b"
    rf"|{NUMBER}\s*%\s+of\s+(?:the\s+)?(?:peak|BLAS|numpy|bandwidth)"  # 85% of BLAS
)
HIDDEN = [
    re.compile(r"```.*?```", re.S),  # code blocks
    re.compile(r"\$\$.*?\$\$", re.S),  # display math
    re.compile(r"\$[^$\n]+\$"),  # inline math
    re.compile(r"\{glue(?::\w+)?\}`[^`]*`"),  # glued values
    re.compile(r"`[^`\n]*`"),  # inline code (and the other roles' arguments)
    re.compile(r"<!--.*?-->", re.S),
    re.compile(r"\]\([^)]*\)"),  # link targets
]
CITED = re.compile(r"\{cite(?::\w+)?\}")


def findings(path: Path) -> list[str]:
    """Every measured-looking figure typed into a markdown cell of the notebook, uncited."""
    cells = json.loads(Path(path).read_text())["cells"]
    found = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        for paragraph in re.split(r"\n\s*\n", text):
            if CITED.search(paragraph):
                continue
            visible = paragraph
            for pattern in HIDDEN:
                visible = pattern.sub(" ", visible)
            for match in FIGURE.finditer(visible):
                start = max(0, match.start() - 30)
                context = " ".join(visible[start : match.end() + 10].split())
                found.append(
                    f"{Path(path).name}: cell {index}: {match.group(0)!r} in '{context}'"
                )
    return found


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    found = [line for path in paths for line in findings(path)]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
