"""Command line: the same jobs the Lambdas run, from a terminal.

python -m engine render FILE... --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from engine.errors import DocVisionError

if TYPE_CHECKING:
    from engine.service import DocVision

out = Console()
err = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def _report_error(exc: DocVisionError) -> None:
    err.print(f"[red]error[/red] {exc.code}: {exc}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------- render
def cmd_render(args: argparse.Namespace) -> int:
    from engine.documents import open_document

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started, pages_done, failures = time.monotonic(), 0, 0
    with _progress() as progress:
        for file in args.files:
            task = progress.add_task(Path(file).name, total=None, rate="")
            partial: Path | None = None
            try:
                with open_document(file) as doc:
                    progress.update(task, total=doc.page_count)
                    target = out_dir / f"{Path(file).stem}-{doc.document_id[:12]}"
                    partial = target.with_name(target.name + ".partial")
                    shutil.rmtree(partial, ignore_errors=True)
                    partial.mkdir()
                    pages = []
                    for frame in doc.pages():
                        png = partial / f"page-{frame.page_number:04d}.png"
                        png.write_bytes(frame.png_bytes())
                        pages.append({**frame.meta(), "file": png.name})
                        pages_done += 1
                        rate = pages_done / max(time.monotonic() - started, 1e-9)
                        progress.update(task, advance=1, rate=f"{rate:.1f} pages/s")
                    manifest = {
                        "document_id": doc.document_id,
                        "source": str(file),
                        "source_type": doc.type.value,
                        "size_bytes": doc.size_bytes,
                        "page_count": doc.page_count,
                        "pages": pages,
                    }
                    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2))
                    # Only a complete document appears under its final name.
                    shutil.rmtree(target, ignore_errors=True)
                    partial.rename(target)
            except DocVisionError as exc:
                failures += 1
                if partial is not None:
                    shutil.rmtree(partial, ignore_errors=True)
                progress.update(task, description=f"[red]{Path(file).name} ({exc.code})")
                _report_error(exc)
            except BaseException:
                # Never leave a .partial folder behind, whatever the failure (Ctrl-C included).
                if partial is not None:
                    shutil.rmtree(partial, ignore_errors=True)
                raise
    elapsed = time.monotonic() - started
    ok = len(args.files) - failures
    out.print(
        f"rendered {pages_done} pages from {ok} of {len(args.files)} documents in {elapsed:.1f} s "
        f"({pages_done / max(elapsed, 1e-9):.1f} pages/s) into {out_dir}; {failures} failed",
        highlight=False,
    )
    return 1 if failures else 0


# --------------------------------------------------------------------------------- ingest / search
def _service(args: argparse.Namespace) -> DocVision:
    from engine.config import Settings
    from engine.service import bootstrap

    overrides = {"collection": args.collection} if getattr(args, "collection", None) else {}
    dv = bootstrap(Settings(**overrides))
    _opened.append(dv)  # closed when the command ends (main): the embedded index's lock goes with it
    return dv


_opened: list[DocVision] = []


def _expand(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        files += (
            sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            if p.is_dir()
            else [p]
        )
    return files


def cmd_ingest(args: argparse.Namespace) -> int:
    from rich.table import Table

    dv = _service(args)
    files = _expand(args.paths)
    err.print(
        f"model {dv.embedder.model_id} on {dv.embedder.plan.name}; index {dv.index.backend}; store {dv.store.uri}",
        highlight=False,
    )
    if dv.embedder.model_id.startswith("tiny-random"):
        err.print(
            "[yellow]note:[/yellow] tiny random-weight model: scores are meaningless. Set DOCVISION_MODEL to a baked "
            "directory (python -m models.bake vidore/colqwen2-v1.0 models/baked) or a hub id for real retrieval."
        )
    rows, failures, started, pages_total = [], 0, time.monotonic(), 0
    with _progress() as progress:
        overall = progress.add_task("all documents", total=len(files), rate="")
        for file in files:
            task = progress.add_task(file.name, total=None, rate="")
            t0 = time.monotonic()

            def on_progress(done: int, total: int, task=task, t0=t0) -> None:
                progress.update(
                    task,
                    completed=done,
                    total=total,
                    rate=f"{done / max(time.monotonic() - t0, 1e-9):.2f} pages/s",
                )

            try:
                r = dv.ingest(file, on_progress=on_progress)
                pages_total += r.pages_embedded
                rows.append(
                    (
                        file.name,
                        r.source_type,
                        str(r.page_count),
                        str(r.pages_embedded),
                        str(r.pages_already_stored),
                        r.document_id[:12],
                        "ok" + (f", replaced {len(r.replaced_documents)}" if r.replaced_documents else ""),
                    )
                )
            except DocVisionError as exc:
                failures += 1
                progress.update(task, description=f"[red]{file.name} ({exc.code})")
                _report_error(exc)
                rows.append((file.name, "", "", "", "", "", f"[red]{exc.code}[/red]: {exc.reason}"))
            progress.update(overall, advance=1)
    table = Table(title=f"ingested into {dv.index.backend} collection {dv.settings.collection!r}")
    for col in ("document", "type", "pages", "embedded", "already stored", "document_id", "status"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    elapsed = time.monotonic() - started
    out.print(
        f"{len(files) - failures} of {len(files)} documents, {pages_total} pages embedded in {elapsed:.1f} s ({pages_total / max(elapsed, 1e-9):.2f} pages/s); {failures} failed",
        highlight=False,
    )
    return 1 if failures else 0


def cmd_search(args: argparse.Namespace) -> int:
    from rich.table import Table

    dv = _service(args)
    result = dv.search(
        args.query, top_k=args.top_k, document_ids=args.document or None, mode=args.mode
    ).to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    table = Table(title=f"{args.query!r} ({result['mode']}, {result['timing_ms']['search']} ms)")
    for col in ("#", "score", "document", "page", "document_id"):
        table.add_column(col)
    for i, h in enumerate(result["hits"], 1):
        table.add_row(
            str(i),
            f"{h['score']:.4f}",
            Path(h["source_uri"]).name,
            str(h["page_number"]),
            h["document_id"][:12],
        )
    out.print(table)
    if result["model_id"].startswith("tiny-random"):
        err.print(
            "[yellow]note:[/yellow] tiny random-weight model: these scores are meaningless (see README: real models)."
        )
    return 0


def cmd_index_check(args: argparse.Namespace) -> int:
    """Recall@10 of the search plan vs exhaustive MaxSim on pseudo-queries from the collection (--apply: record
    the smallest limits that reach the target). Exit 0 when the plan in use meets the target (or was fixed)."""
    dv = _service(args)
    result = dv.check_index(queries=args.queries, target=args.target, apply=args.apply)
    row = result.to_dict()
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        cur, rec = result.current, result.recommended
        out.print(f"{result.backend} collection {dv.settings.collection!r}: {result.pages} pages, plan {result.plan}, "
                  f"{result.queries} pseudo-queries, target recall@10 {result.target}")  # fmt: skip
        out.print(f"  in use   prefetch {cur.prefetch_limit} / blocks {cur.block_limit}: recall@10 {cur.recall_at_10:.3f} (same pages {cur.id_recall_at_10:.3f}), "
                  f"p50 {cur.p50_ms} ms, p95 {cur.p95_ms} ms (exhaustive p50 {result.exhaustive_p50_ms} ms)")  # fmt: skip
        if rec is not None:
            out.print(f"  smallest prefetch {rec.prefetch_limit} / blocks {rec.block_limit}: recall@10 {rec.recall_at_10:.3f}, "
                      f"p50 {rec.p50_ms} ms, p95 {rec.p95_ms} ms{' (applied)' if result.applied else ''}")  # fmt: skip
        if not result.meets_target and not result.applied:
            err.print(
                "[yellow]the plan in use misses the target:[/yellow] run with --apply to record the limits above"
            )
    return 0 if result.meets_target or result.applied else 1


def _page_ref(text: str) -> dict:
    doc, _, page = text.rpartition(":")
    if not doc or not page.isdigit():
        raise SystemExit(f"--page expects DOCUMENT_ID:PAGE_NUMBER, got {text!r}")
    return {"document_id": doc, "page_number": int(page)}


def cmd_score(args: argparse.Namespace) -> int:
    from PIL import Image

    dv = _service(args)
    images = [Image.open(p).convert("RGB") for p in args.image]
    print(
        json.dumps(
            dv.score(args.query, pages=[_page_ref(p) for p in args.page], images=images or None).to_dict(),
            indent=2,
        )
    )
    return 0


def cmd_heatmap(args: argparse.Namespace) -> int:
    dv = _service(args)
    smap = dv.similarity_map(args.query, args.document, args.page)
    Path(args.out).write_bytes(dv.render_heatmap(smap))
    top = smap.patches[0]
    out.print(
        f"wrote {args.out}: page {args.page}, grid {smap.grid[0]}x{smap.grid[1]}, score {smap.score:.4f}, hottest patch box {list(top.box)}",
        highlight=False,
    )
    return 0


# -------------------------------------------------------------------------------------------- backfill
def _shard_arg(args: argparse.Namespace) -> int | None:
    """--shard, else $AWS_BATCH_JOB_ARRAY_INDEX (an array job's child), else 0 for one shard, else None (plan)."""
    from engine.config import Settings

    raw = args.shard if args.shard is not None else Settings().batch_array_index
    if raw in (None, ""):
        return 0 if args.shards == 1 else None
    if not str(raw).isdigit():
        raise SystemExit(f"--shard expects a shard number 0..{args.shards - 1}, got {raw!r}")
    return int(raw)


def cmd_backfill(args: argparse.Namespace) -> int:
    import boto3
    from rich.table import Table

    from engine.backfill import list_source, plan_shards, run_shard
    from engine.bootstrap import build
    from engine.config import Settings
    from engine.service import DocVision

    s3 = boto3.client("s3")
    shard = _shard_arg(args)
    if shard is None:  # plan only: how the keys split, and the command that runs the shards
        with err.status(f"listing {args.source}…"):
            plan = plan_shards(list_source(s3, args.source, args.inventory), args.shards, args.source)
        table = Table(title=f"{args.source}: {args.shards} shard(s)")
        for col in ("shard", "documents", "MiB"):
            table.add_column(col, justify="right")
        for row in plan.summary():
            table.add_row(str(row["shard"]), str(row["documents"]), f"{row['bytes'] / 2**20:.1f}")
        out.print(table)
        total = sum(len(k) for k in plan.keys)
        out.print(
            f"{total} documents. Run one shard here with --shard I, or all of them as an AWS Batch array job "
            f"of size {args.shards} (README: Backfill).",
            highlight=False,
        )
        return 0
    overrides = {"collection": args.collection} if args.collection else {}
    dv = DocVision(services=build(Settings(**overrides), s3_client=s3))
    err.print(
        f"shard {shard} of {args.shards}: model {dv.embedder.model_id} on {dv.embedder.plan.name}; "
        f"index {dv.index.backend}; store {dv.store.uri}",
        highlight=False,
    )
    started = time.monotonic()
    with _progress() as progress:
        docs = progress.add_task(f"shard {shard}/{args.shards}", total=None, rate="")

        def on_document(key: str, handled: int, total: int, pages: int) -> None:
            rate = pages / max(time.monotonic() - started, 1e-9)
            progress.update(docs, completed=handled, total=total, rate=f"{pages} pages, {rate:.1f} pages/s")

        result = run_shard(dv, s3, args.source, shard=shard, shards=args.shards, inventory=args.inventory,
                           on_document=on_document)  # fmt: skip
    for key, entry in result.entries.items():
        if entry["status"] in ("failed", "error"):
            err.print(f"[red]{entry['status']}[/red] {key}: {entry['error']['code']}", highlight=False)
    out.print(
        f"shard {shard} of {args.shards}: {result.done} of {result.documents} documents done "
        f"({result.skipped} already done before), {result.failed} failed, {result.errors} to retry; "
        f"{result.pages_embedded} pages embedded, {result.pages_already_stored} already stored, "
        f"{result.pages_per_s:.1f} pages/s; record {dv.store.uri}/{result.record_key}",
        highlight=False,
        soft_wrap=True,
    )
    return 1 if result.errors else 0  # transient errors: a non-zero exit lets Batch retry the shard


# --------------------------------------------------------------------------------------------- extract
def cmd_extract(args: argparse.Namespace) -> int:
    from rich.table import Table

    from engine.bootstrap import build
    from engine.config import Settings
    from engine.extraction import extract_document
    from engine.service import DocVision
    from engine.storage import open_store

    settings = Settings()
    if not settings.llm_model:
        err.print(
            "[red]error[/red] config_error: no LLM endpoint configured. Set DOCVISION_LLM_MODEL and DOCVISION_LLM_BASE_URL "
            "(any OpenAI-compatible endpoint), or DOCVISION_LLM_PROVIDER=anthropic|aws-bedrock with its credentials."
        )
        return 2
    schema = json.loads(Path(args.schema).read_text())
    store = open_store(args.out) if args.out else open_store(settings.store)
    t = time.monotonic()
    with err.status(f"extracting {Path(args.file).name} with {settings.llm_provider}:{settings.llm_model}…"):
        result = extract_document(args.file, schema, settings=settings, store=store, service=DocVision(services=build(settings, store=store)),
                                  csv=args.format == "csv", use_cache=not args.no_cache)  # fmt: skip
    prov = result.result["provenance"]
    how = "cached result" if result.cached else f"{prov['attempts']} LLM attempt(s)"
    table = Table(title=f"{Path(args.file).name}: {how}, pages {prov['pages_used']}")
    for col in ("table", "rows", "file"):
        table.add_column(col)
    for name, info in result.keys["tables"].items():
        table.add_row(name, str(info["rows"]), info.get("csv") or info["parquet"])
    out.print(table)
    q = result.quality
    checks = ", ".join(f"{c['name']}: {c['status']}" for c in q["consistency"]) or "none declared"
    g = q.get("grounding") or {}
    score = "n/a (nothing checkable)" if q["quality_score"] is None else f"{q['quality_score']:.2f}"
    grounded = (
        f"grounded {g['grounded']}/{g['checked']} on the page"
        if g.get("checked")
        else "no text layer to check against"
    )
    out.print(
        f"quality {score} ({grounded}; required filled {q['completeness']['required_filled']}/{q['completeness']['required_total']}, "
        f"optional {q['completeness']['optional_filled']}/{q['completeness']['optional_total']}; consistency: {checks})",
        highlight=False,
    )
    if g.get("ungrounded_paths"):
        out.print(
            f"not found on the page: {', '.join(g['ungrounded_paths'][:12])}", highlight=False, soft_wrap=True
        )
    v = q.get("verdict") or {}
    if v:
        why = "; ".join(f"{r['reason']} {r.get('path', '')}".strip() for r in v["reasons"][:12])
        more = f" (+{len(v['reasons']) - 12} more)" if len(v["reasons"]) > 12 else ""
        out.print(
            f"verdict: {v['decision'].upper()}" + (f" — {why}{more}" if why else ""),
            highlight=False,
            soft_wrap=True,
        )
    out.print(
        f"result: {result.keys['result']}  quality: {result.keys['quality']}  ({time.monotonic() - t:.1f} s)",
        highlight=False,
        soft_wrap=True,  # paths stay copyable
    )
    return 0


def cmd_cite(args: argparse.Namespace) -> int:
    """Draw every cited box of an extraction result on its page image (PNG), to check it at a glance."""
    from engine.config import Settings
    from engine.extraction.draw import draw_citations

    written = draw_citations(Path(args.result_dir), Path(args.out), settings=Settings(), source=args.source)
    for path in written:
        out.print(str(path), highlight=False, soft_wrap=True)
    return 0


def cmd_schema_show(args: argparse.Namespace) -> int:
    from engine.extraction import compile_schema, render_baml

    print(render_baml(compile_schema(Path(args.schema).read_text())))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from engine.config import Settings
    from engine.embedding.catalog import catalog, table

    rows = catalog(budget_bytes=Settings().page_bytes_budget)
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


# ----------------------------------------------------------------------------------------------- main
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {}


def cmd_review(args: argparse.Namespace) -> int:
    """Write one self-contained HTML page to review an extraction: verdict, fields, cited boxes on the pages."""
    from engine.config import Settings
    from engine.extraction.review import write_review

    target = write_review(
        Path(args.result_dir), Path(args.out) if args.out else None, settings=Settings(), source=args.source
    )
    out.print(str(target), highlight=False, soft_wrap=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docvision", description="Visual document intelligence: render, ingest, search, extract."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("render", help="render documents to 300-DPI PNG page frames + manifest.json")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per document)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser(
        "models", help="model families: vectors/page, dims, license, storage plan and measured cost"
    )
    p.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("ingest", help="render, embed and index documents (files or folders)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--collection", help="collection name (default DOCVISION_COLLECTION)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="top pages for a text query (late interaction)")
    p.add_argument("query")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--document", action="append", help="restrict to this document_id (repeatable)")
    p.add_argument(
        "--mode",
        choices=["rerank", "exact", "dense", "text", "hybrid"],
        default="rerank",
        help="the visual plan (rerank, default), exhaustive MaxSim, one mean vector, BM25 over the pages' words "
        "(text), or the visual plan and the words fused by reciprocal rank (hybrid)",
    )
    p.add_argument("--collection")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("index", help="index tools")
    isub = p.add_subparsers(dest="index_command", required=True)
    p = isub.add_parser(
        "check",
        help="recall@10 of the search plan vs exhaustive MaxSim on pseudo-queries sampled from the collection, "
        "p50/p95, and the smallest prefetch/block limits reaching the target (--apply records them)",
    )
    p.add_argument("--collection", help="collection name (default DOCVISION_COLLECTION)")
    p.add_argument("--queries", type=int, help="pseudo-queries (default DOCVISION_RECALL_CHECK_QUERIES)")
    p.add_argument("--target", type=float, help="recall@10 target (default DOCVISION_RECALL_TARGET)")
    p.add_argument("--apply", action="store_true", help="record the smallest limits reaching the target")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_index_check)

    p = sub.add_parser(
        "score", help="late-interaction scores of queries against indexed pages or image files"
    )
    p.add_argument("--query", action="append", required=True)
    p.add_argument("--page", action="append", default=[], metavar="DOC_ID:PAGE")
    p.add_argument("--image", action="append", default=[])
    p.add_argument("--collection")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("heatmap", help="write a similarity heatmap PNG of a query over an indexed page")
    p.add_argument("query")
    p.add_argument("--document", required=True)
    p.add_argument("--page", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--collection")
    p.set_defaults(func=cmd_heatmap)

    p = sub.add_parser("extract", help="extract schema-shaped data from a document with a vision LLM (BAML)")
    p.add_argument("file")
    p.add_argument("--schema", required=True, help="JSON Schema file (see schemas/)")
    p.add_argument("--out", help="store for results (default DOCVISION_STORE)")
    p.add_argument(
        "--format",
        choices=["parquet", "csv"],
        default="parquet",
        help="csv writes CSV beside the Parquet tables",
    )
    p.add_argument("--no-cache", action="store_true")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser(
        "backfill",
        help="ingest an existing S3 archive in shards (plan with --shards N, run one with --shard I)",
    )
    p.add_argument("source", metavar="s3://bucket/prefix")
    p.add_argument("--shards", type=int, default=1, help="how many shards the archive is split into")
    p.add_argument(
        "--shard",
        help="the shard to run here, 0..N-1 (default $AWS_BATCH_JOB_ARRAY_INDEX; neither = print the plan)",
    )
    p.add_argument(
        "--inventory", metavar="s3://…/manifest.json", help="S3 Inventory manifest instead of a listing"
    )
    p.add_argument("--collection")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("cite", help="draw an extraction's cited boxes on its page images (PNG)")
    p.add_argument(
        "result_dir", help="folder holding result.json (results/<document_id>/<key>/ in the store)"
    )
    p.add_argument("--out", required=True, help="folder for page-<n>.png")
    p.add_argument("--source", help="the document, when result.json's source is not readable from here")
    p.set_defaults(func=cmd_cite)

    p = sub.add_parser("review", help="write one self-contained HTML page to review an extraction")
    p.add_argument(
        "result_dir", help="folder holding result.json (results/<document_id>/<key>/ in the store)"
    )
    p.add_argument("--out", help="the HTML file to write (default: RESULT_DIR/review.html)")
    p.add_argument("--source", help="the document, when result.json's source is not readable from here")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("schema", help="schema tools")
    ssub = p.add_subparsers(dest="schema_command", required=True)
    p = ssub.add_parser(
        "show", help="print the BAML types a JSON Schema compiles to (what the model is asked for)"
    )
    p.add_argument("schema")
    p.set_defaults(func=cmd_schema_show)

    for register in EXTENSIONS:
        register(sub)
    return parser


# Sub-commands of later subsystems (extract) register here.
EXTENSIONS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except DocVisionError as exc:
        _report_error(exc)
        return 2
    finally:
        while _opened:
            _opened.pop().services.close()
