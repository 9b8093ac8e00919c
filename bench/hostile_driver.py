"""The pytest module bench/api_hostile.py copies into a checkout (as tests/integration/test_zz_hostile_compare.py,
beside today's test_api_hostile.py copied as hostile_cases_now.py): today's hostile CASES against whatever
handlers/ that checkout has; per case status, error code, handler CPU seconds and peak-RSS growth, written to
$HOSTILE_OUT. A case past $HOSTILE_CPU_CAP_S of CPU is stopped (ITIMER_PROF) and recorded as over the cap.
Not collected here (the file name is not test_*)."""

# ruff: noqa: ANN001, ANN201, F401, F811
from __future__ import annotations

import copy
import json
import os
import resource
import signal
import time
from pathlib import Path

from tests.integration.hostile_cases_now import CASES, CPU_LIMIT_S, RSS_GROWTH_LIMIT_MB

from tests.integration.test_handlers import aws, event, moto_url  # noqa: F401

CAP = float(os.environ.get("HOSTILE_CPU_CAP_S", "20"))


class OverCap(BaseException):
    pass


def _prof(signum, frame):
    raise OverCap


def _once(route, body, b64):
    import handlers.api
    from handlers.invoke import LocalContext

    ev = copy.deepcopy(event(route))
    ev["body"], ev["isBase64Encoded"] = body, b64
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.process_time()
    status, code, note = None, None, ""
    signal.setitimer(signal.ITIMER_PROF, CAP)
    try:
        out = handlers.api.handler(ev, LocalContext())
        signal.setitimer(signal.ITIMER_PROF, 0)
        status = out["statusCode"]
        try:
            parsed = json.loads(out["body"])
            code = parsed.get("error", {}).get("code") if isinstance(parsed, dict) else None
        except (TypeError, ValueError):
            note = "body is not JSON"
    except OverCap:
        note = f"stopped at the {CAP:g} s CPU cap"
    except Exception as exc:  # the handler raised (Lambda would answer 502)
        signal.setitimer(signal.ITIMER_PROF, 0)
        note = f"handler raised {type(exc).__name__}"
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    cpu = time.process_time() - t
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return status, code, cpu, growth, note


def test_compare(aws):
    signal.signal(signal.SIGPROF, _prof)
    status, *_ = _once("search.json", json.dumps({"query": "warm up"}), False)
    assert status == 200
    rows = []
    for case, route, body, b64, accepted in CASES:
        status, code, cpu, growth, note = _once(route, body, b64)
        ok = status in accepted and cpu < CPU_LIMIT_S and growth < RSS_GROWTH_LIMIT_MB
        if status is not None and status >= 400:
            ok = ok and isinstance(code, str)
        rows.append(
            {
                "case": case,
                "route": route,
                "expected": list(accepted),
                "status": status,
                "error_code": code,
                "handler_cpu_s": round(cpu, 4),
                "peak_rss_growth_mb": round(growth, 1),
                "passed": ok,
                **({"note": note} if note else {}),
            }
        )
        print(rows[-1], flush=True)
    Path(os.environ["HOSTILE_OUT"]).write_text(json.dumps(rows, indent=1))
