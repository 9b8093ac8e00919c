"""Write one extraction's outputs through the blob store (tables as Parquet, and CSV on request; quality.json;
result.json last, whose presence marks a complete, cacheable result), and read a cached one back.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.config import Settings
from engine.extraction.shape import dumps

log = logging.getLogger("engine.extraction.runner")


@dataclass
class ExtractionOutput:
    cache_key: str
    cached: bool
    result: dict[str, Any]  # canonical result.json content
    quality: dict[str, Any]
    keys: dict[str, Any]  # where things were written


def write(store: Any, base: str, tables: dict[str, Any], csv: bool) -> dict[str, Any]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    outputs: dict[str, Any] = {
        "result": store.url(f"{base}/result.json"),
        "quality": store.url(f"{base}/quality.json"),
        "tables": {},
    }
    for tname, table in tables.items():
        buf = io.BytesIO()
        pq.write_table(table, buf)
        outputs["tables"][tname] = {
            "parquet": store.put(
                f"{base}/tables/{tname}.parquet", buf.getvalue(), "application/vnd.apache.parquet"
            ),
            "rows": table.num_rows,
        }
        if csv:
            cbuf = io.BytesIO()
            pacsv.write_csv(table, cbuf)
            outputs["tables"][tname]["csv"] = store.put(
                f"{base}/tables/{tname}.csv", cbuf.getvalue(), "text/csv"
            )
    return outputs  # fmt: skip


def cached(store: Any, base: str, key: str, settings: Settings) -> ExtractionOutput | None:
    if not store.exists(f"{base}/result.json"):
        return None
    cached = json.loads(store.get(f"{base}/result.json"))
    age = time.time() - datetime.fromisoformat(cached["provenance"]["created"]).timestamp()
    if age > settings.cache_ttl_s:
        return None
    log.info("cache hit %s", key[:16])
    quality = json.loads(store.get(f"{base}/quality.json"))
    return ExtractionOutput(key, True, cached, quality, cached["provenance"]["outputs"])


def finish(store: Any, base: str, quality: dict[str, Any], result: dict[str, Any]) -> None:
    """quality.json, then result.json: its presence is what marks a complete (cacheable) result."""
    store.put(f"{base}/quality.json", dumps(quality).encode(), "application/json")
    store.put(f"{base}/result.json", dumps(result).encode(), "application/json")
