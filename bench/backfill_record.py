"""Bytes a backfill shard writes for its record, before (engine/backfill.py at OLD_COMMIT: the whole record,
indented, rewritten after every document) and after (engine/backfill.py now: one progress entry per document,
the record rewritten geometrically), in one run against moto's S3 on 127.0.0.1.

Every document is "ingested" instantly by a stand-in service (its ingest returns a complete one-page result):
what is measured is the record keeping of run_shard, through the real S3 blob store (S3Store over boto3), with
every PUT/DELETE/LIST counted at the store. The variants alternate within each round (old, new, old, new, ...)
for --reps rounds. Counts are the same in every rep and bytes nearly so (the record holds its own elapsed
seconds); the wall seconds (moto on this shared host, not S3) vary. Each metric: median, min and max over reps.

python -m bench.backfill_record [--docs 250,500,1000] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

from bench.common import write_result

OLD_COMMIT = "4ff51ac^"  # the parent of "backfill: ... the shard record costs O(n) bytes"
ROOT = Path(__file__).resolve().parents[1]
BUCKET = "bench-backfill"


def old_backfill() -> tuple[types.ModuleType, str]:
    """engine/backfill.py as it was at OLD_COMMIT, as a module (its imports are today's engine)."""
    commit = subprocess.run(
        ["git", "rev-parse", OLD_COMMIT], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    source = subprocess.run(
        ["git", "show", f"{commit}:engine/backfill.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType("backfill_before")
    module.__file__ = f"<{commit[:10]}:engine/backfill.py>"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 (our own history)
    return module, commit


class CountingStore:
    """The S3 blob store, counting what goes over the wire."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.put_bytes = self.puts = self.deletes = self.lists = self.gets = self.get_bytes = 0

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.puts += 1
        self.put_bytes += len(data)
        return self.inner.put(key, data, content_type)

    def get(self, key: str, **kw: Any) -> bytes:
        data = self.inner.get(key, **kw)
        self.gets += 1
        self.get_bytes += len(data)
        return data

    def list(self, prefix: str = "") -> list[str]:
        self.lists += 1
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.deletes += 1
        self.inner.delete(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)


def one_run(module: types.ModuleType, client: Any, n: int, tag: str) -> dict[str, Any]:
    from engine.storage import S3Store

    store = CountingStore(S3Store(BUCKET, f"derived-{tag}", client=client))
    done = types.SimpleNamespace(complete=True, document_id="d" * 64, page_count=1, pages_embedded=1,
                                 pages_already_stored=0)  # fmt: skip
    service = types.SimpleNamespace(store=store, s3_client=None, ingest=lambda *a, **k: done)
    # keys and ETags shaped like an archive's (32-hex MD5 ETags), in one shard
    objs = [module.SourceObject(f"archive/2026/{i:06d}-invoice.pdf", f"{i:032x}", 100_000) for i in range(n)]
    source = f"s3://{BUCKET}/archive/"
    t = time.perf_counter()
    result = module.run_shard(service, None, source, shard=0, shards=1, objects=objs)
    seconds = time.perf_counter() - t
    assert result.done == n, result
    record = store.inner.get(module.record_key(source, 0, 1))
    return {"put_bytes": store.put_bytes, "puts": store.puts, "deletes": store.deletes, "lists": store.lists,
            "record_bytes": len(record), "seconds": seconds}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", default="250,500,1000")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    import boto3

    from engine import backfill as new_module
    from tests.fixtures.moto import moto_server

    old_module, commit = old_backfill()
    cells = []
    with moto_server() as url:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing")  # fmt: skip
        client.create_bucket(Bucket=BUCKET)
        run_no = 0
        for n in map(int, args.docs.split(",")):
            runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
            for _ in range(args.reps):
                for variant, module in (("before", old_module), ("after", new_module)):
                    run_no += 1
                    runs[variant].append(one_run(module, client, n, f"{variant}-{run_no}"))
            cell: dict[str, Any] = {"documents": n}
            for variant, rs in runs.items():
                # counts are the same every rep; bytes move by a few (the record holds its own elapsed seconds)
                cell[variant] = {"reps": len(rs)}
                for metric in rs[0]:
                    values = [r[metric] for r in rs]
                    cell[variant][metric] = {"median": statistics.median(values), "min": min(values),
                                             "max": max(values)}  # fmt: skip
            before, after = cell["before"]["put_bytes"]["median"], cell["after"]["put_bytes"]["median"]
            cell["put_bytes_ratio"] = round(before / after, 1)
            print(cell, flush=True)
            cells.append(cell)
    write_result(
        "backfill-record-bytes",
        {
            "what": "Bytes PUT for one backfill shard's record, before/after O(n) record keeping",
            "before": f"engine/backfill.py at {commit} (whole record, indent=1, after every document)",
            "after": "engine/backfill.py of this commit (progress entry per document, geometric rewrite)",
            "store": "engine.storage.S3Store over boto3 -> moto server on 127.0.0.1 (unversioned bucket)",
            "ingest": "stand-in service: every document completes instantly (1 page); only record I/O is measured",
            "keys": "archive/2026/NNNNNN-invoice.pdf, 32-hex ETags, one shard",
            "cells": cells,
        },
    )


if __name__ == "__main__":
    main()
