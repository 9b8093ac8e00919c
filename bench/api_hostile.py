"""The API's hostile-request cases (tests/integration/test_api_hostile.py CASES, today's list) against the
handler before the issue 23 fixes and now: per case the answer, its error code, the handler's CPU seconds and
its peak-RSS growth, and whether it meets the suite's bar (the expected status, < 1 s CPU, < 256 MB growth).

Each side runs in a temporary git worktree (--before, default f107aec: main before the API fixes, the parent
of 541210b; --after, default HEAD) with bench/hostile_driver.py, the tiny model and the BAML client of this
checkout linked in, against moto on 127.0.0.1 — the suite's own fixtures. One run per side: the CPU figures are
single measurements for a bound, not a speed comparison (bench/api_precheck.py times the body check). A case
the old code cannot finish is stopped at --cap CPU seconds.

python -m bench.api_hostile [--before f107aec] [--after HEAD] [--cap 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import write_result

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def run_side(commit: str, cap: float, work: Path) -> list[dict[str, Any]]:
    tree = work / commit[:10]
    git("worktree", "add", "--detach", str(tree), commit)
    try:
        for link in [
            "baml_client",
            *(p.relative_to(ROOT).as_posix() for p in (ROOT / "models").glob("tiny-*")),
        ]:
            if not (tree / link).exists():
                (tree / link).symlink_to(ROOT / link)
        shutil.copy(
            ROOT / "tests/integration/test_api_hostile.py", tree / "tests/integration/hostile_cases_now.py"
        )
        shutil.copy(ROOT / "bench/hostile_driver.py", tree / "tests/integration/test_zz_hostile_compare.py")
        out = work / f"{commit[:10]}.json"
        env = {**os.environ, "HOSTILE_OUT": str(out), "HOSTILE_CPU_CAP_S": str(cap),
               "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}  # fmt: skip
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                        "tests/integration/test_zz_hostile_compare.py"], cwd=tree, env=env, check=True)  # fmt: skip
        return json.loads(out.read_text())
    finally:
        git("worktree", "remove", "--force", str(tree))


def merge(before: list[dict], after: list[dict], commits: dict[str, str], cap: float) -> dict[str, Any]:
    by_case = {r["case"]: r for r in after}
    cases = []
    for b in before:
        a = by_case[b["case"]]
        strip = ("case", "route", "expected")
        cases.append({"case": b["case"], "route": b["route"], "expected": b["expected"],
                      "before": {k: v for k, v in b.items() if k not in strip},
                      "after": {k: v for k, v in a.items() if k not in strip}})  # fmt: skip
    return {
        "what": "tests/integration/test_api_hostile.py CASES before/after the issue 23 API fixes",
        "bar": "expected status (4xx with a typed error.code), handler CPU < 1 s, peak RSS growth < 256 MB",
        "commits": commits,
        "cpu_cap_s": cap,
        "reps": 1,
        "summary": {
            side: {
                "cases": len(rows),
                "failed": sum(not r["passed"] for r in rows),
                "over_1s_cpu": sum(r["handler_cpu_s"] >= 1.0 for r in rows),
                "5xx_or_no_answer": sum(r["status"] is None or r["status"] >= 500 for r in rows),
                "max_handler_cpu_s": max(r["handler_cpu_s"] for r in rows),
            }  # fmt: skip
            for side, rows in (("before", before), ("after", after))
        },
        "cases": cases,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="f107aec")
    ap.add_argument("--after", default="HEAD")
    ap.add_argument("--cap", type=float, default=20.0)
    ap.add_argument("--from-json", nargs=2, metavar=("BEFORE", "AFTER"), help="merge two driver outputs")
    ap.add_argument("--note", default="", help="how the sides were run, kept in the result")
    args = ap.parse_args()
    commits = {"before": git("rev-parse", args.before), "after": git("rev-parse", args.after)}
    if args.from_json:
        before, after = (json.loads(Path(p).read_text()) for p in args.from_json)
    else:
        with tempfile.TemporaryDirectory(prefix="api-hostile-") as tmp:
            before = run_side(commits["before"], args.cap, Path(tmp))
            after = run_side(commits["after"], args.cap, Path(tmp))
    result = merge(before, after, commits, args.cap) | ({"note": args.note} if args.note else {})
    print(json.dumps(result["summary"], indent=1))
    write_result("api-hostile-before-after", result)


if __name__ == "__main__":
    main()
