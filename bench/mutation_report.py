"""Per-module mutation scores from mutmut's results in mutants/ (after bench/mutation.sh).

    python bench/mutation_report.py                 # a table, one line per module
    python bench/mutation_report.py --survivors     # and every surviving mutant's name

"no tests" mutants (code no selected test runs) count as survivors; timeouts as killed.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
          None: "not checked"}


def main() -> None:
    show = "--survivors" in sys.argv
    root = Path(__file__).resolve().parent.parent / "mutants"
    print(f"{'module':34} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8} "
          f"{'unrun':>6} {'score':>6}")
    for meta in sorted(root.glob("accounts/*/*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:
            continue
        counts = Counter(STATUS.get(code, "suspicious") for code in codes.values())
        killed = counts["killed"] + counts["timeout"]
        run = len(codes) - counts["not checked"]
        score = f"{100 * killed / run:.1f}%" if run else "-"
        name = str(meta.relative_to(root)).removesuffix(".meta")
        print(f"{name:34} {len(codes):7} {killed:7} {counts['survived']:8} "
              f"{counts['no tests']:8} {counts['not checked']:6} {score:>6}")
        if show:
            for key, code in sorted(codes.items()):
                if STATUS.get(code) in ("survived", "no tests", "suspicious"):
                    print(f"    {key}  ({STATUS.get(code, 'suspicious')})")


if __name__ == "__main__":
    main()
