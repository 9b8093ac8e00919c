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
    elapsed = time.monotonic() - started
    ok = len(args.files) - failures
    out.print(
        f"rendered {pages_done} pages from {ok} of {len(args.files)} documents in {elapsed:.1f} s "
        f"({pages_done / max(elapsed, 1e-9):.1f} pages/s) into {out_dir}; {failures} failed",
        highlight=False,
    )
    return 1 if failures else 0


# ----------------------------------------------------------------------------------------------- main
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {}


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

    for register in _EXTENSIONS:
        register(sub)
    return parser


# Later subsystems (ingest/search/extract) register their sub-commands here to keep this file readable.
_EXTENSIONS: list[Callable[[argparse._SubParsersAction], None]] = []


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
