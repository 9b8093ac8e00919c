"""The API's JSON body pre-check, before (main at f107aec: regex string removal, quadratic on an unterminated
string) and after (handlers.api._checked_body: linear), on hostile bodies of 32 KB and 200 KB, in CPU seconds.

The before variant is too slow to repeat at 200 KB (minutes per run), so it runs there --before-reps times
(default 1); every other cell alternates the variants for --reps rounds.

python bench/api_precheck.py [--reps 3] [--before-reps 1]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

from bench.common import machine, write_result

# Verbatim from handlers/api.py on main before issue 23 (the variant measured as "before").
_OLD_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_OLD_BRACKETS = re.compile(r"[\[\]{}]")


def old_depth_ok(body: str) -> bool:
    depth = 0
    for m in _OLD_BRACKETS.finditer(_OLD_STRING.sub("", body)):
        depth += 1 if m.group() in "[{" else -1
        if depth > 64:
            return False
    return True


def new_check(body: str) -> bool:
    from engine.errors import BadRequest
    from handlers.api import _checked_body

    try:
        _checked_body({"body": body})
        return True
    except BadRequest:
        return False


def bodies(size: int) -> dict[str, str]:
    return {
        "escaped-quotes-unterminated": '{"query": "' + '\\"' * ((size - 12) // 2),  # the audit's body
        "open-brackets": "[" * size,
        "valid-long-string": '{"query": "' + "a" * (size - 14) + '"}',
    }


def cpu(fn, body: str) -> float:  # noqa: ANN001
    t = time.process_time()
    fn(body)
    return time.process_time() - t


def main() -> None:
    import handlers.api  # noqa: F401 (imported before timing: a cold import is not the check)

    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--before-reps", type=int, default=1, help="reps of the before variant at 200 KB")
    ap.add_argument("--sizes", default="32768,204800")
    args = ap.parse_args()
    cells = []
    for size in map(int, args.sizes.split(",")):
        for name, body in bodies(size).items():
            runs: dict[str, list[float]] = {"before": [], "after": []}
            for rep in range(args.reps):
                for variant, fn in (("before", old_depth_ok), ("after", new_check)):
                    if (
                        variant == "before"
                        and size > 100_000
                        and name.startswith("escaped")
                        and rep >= args.before_reps
                    ):
                        continue
                    runs[variant].append(cpu(fn, body))
            cell = {"body": name, "bytes": len(body.encode())}
            for variant, times in runs.items():
                cell[variant] = {"cpu_s_median": statistics.median(times), "cpu_s_min": min(times),
                                 "cpu_s_max": max(times), "reps": len(times)}  # fmt: skip
            print(cell, flush=True)
            cells.append(cell)
    write_result("api-precheck", {"what": __doc__.splitlines()[0], "machine": machine(), "cells": cells})


if __name__ == "__main__":
    main()
