"""Run a handler in-process with a sample event — the same code `sam local invoke` runs, without Docker.

python -m handlers.invoke ingest events/s3-put.json
python -m handlers.invoke api events/search.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HANDLERS = {"ingest": "handlers.ingest", "api": "handlers.api"}


@dataclass
class LocalContext:
    """The parts of LambdaContext handlers use, with a real countdown."""

    function_name: str = "docvision-local"
    memory_limit_in_mb: int = 10240
    timeout_s: float = 900.0
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:docvision-local"
    aws_request_id: str = ""
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/docvision-local"
    log_stream_name: str = "local"

    def __post_init__(self) -> None:
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())
        self._deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def invoke(name: str, event: dict, timeout_s: float = 900.0) -> dict:
    module = importlib.import_module(HANDLERS[name])
    return module.handler(event, LocalContext(timeout_s=timeout_s))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("function", choices=sorted(HANDLERS))
    ap.add_argument("event", type=Path)
    ap.add_argument("--timeout", type=float, default=900.0, help="simulated function timeout, seconds")
    args = ap.parse_args(argv)
    result = invoke(args.function, json.loads(args.event.read_text()), args.timeout)
    json.dump(result, sys.stdout, indent=2, default=str)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
