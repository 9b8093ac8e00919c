"""Cold start of the full-size model: imports + baked load, before and after issue 11, in one run.

    python bench/coldstart.py [--reps 3] [--variants ...]     → bench/results/coldstart.json

Each measurement is a fresh Python process (a cold start is a new process), variants alternating, the
order rotated every repetition; the model file is read once first so every variant finds it in the page
cache (on Lambda the first read comes from the image instead, the same for every variant).

Environments (what the worker process imports from):
  venv          the development virtualenv (every dependency, peft and accelerate included).
  runtime tree  what Dockerfile.lambda's final stage holds: the runtime dependencies installed with
                `uv pip install --target` (versions pinned to the venv's, so the two differ only by what is
                pruned), then infra/prune_dists.py removes the bake-only peft and accelerate as the image does;
                run with `python -S` and PYTHONPATH=<repo>:<tree>, as Lambda runs the task root.
Bytecode: the image compiles every module at build time (compileall); here every variant but before-source
reads bytecode compiled once by an untimed warm-up run (PYTHONPYCACHEPREFIX=bench/work/pycache), so bytecode
favours neither side. before-source compiles every module from source at import, as the image of cf89557 did
(its Dockerfile compiled nothing and Lambda's read-only root cannot cache bytecode).

before          the code before issue 11 (its `engine/` from git commit BEFORE_COMMIT, extracted under
                bench/work), venv: `import colpali_engine.models` (every model family), then Embedder(baked)
                loading the whole model, sha256 of every file checked — what a cold start did then.
before-source   the same, bytecode compiled at import (see above).
after-api       the API function now, runtime tree (DOCVISION_VERIFY_WEIGHTS=size, lazy vision): weights read
                and prepacked in a thread while transformers and the one family in use import; the vision
                tower's load is reported apart (paid by the first image, never by a query).
after-ingest    the ingest function now, runtime tree: the same, the whole model loaded (it embeds pages).
after-api-venv  after-api in the venv (peft and accelerate installed), for comparison.
after-api-noboost  after-api with Prefetch.boost() made a no-op (patched in the worker): the prepack keeps
                all CPUs but one to the end, as before the elastic pool, to measure what boost() gives.

Model: full-size ColQwen2 architecture (Qwen2-VL-2B, models/configs/colqwen2-2b.json) with random weights,
baked int8 (bench/embed.py builds the same directories under bench/work/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = ROOT / "bench" / "work"
FULL, BAKED = WORK / "colqwen2-full-random", WORK / "colqwen2-full-random-baked"
VARIANTS = ("before", "after-api", "after-ingest", "after-api-venv", "after-api-noboost", "before-source")
DEFAULT_VARIANTS = VARIANTS
IN_TREE = {"after-api", "after-ingest", "after-api-noboost"}  # the others run in the venv
BEFORE_COMMIT = "cf89557"  # main when issue 11 was taken up
PYCACHE = WORK / "pycache"
PRUNED = ("peft", "accelerate")  # what Dockerfile.lambda's final stage removes


class Clock:
    """Wall and CPU seconds (all threads of this process) per part: on a shared, overloaded host the CPU
    seconds are the steadier measure of the work a cold start does; both are reported."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        self.w, self.c = self.w0, self.c0

    def lap(self, name: str) -> None:
        w, c = time.perf_counter(), time.process_time()
        self.wall[name], self.cpu[name] = w - self.w, c - self.c
        self.w, self.c = w, c

    def total(self, name: str) -> None:
        self.wall[name], self.cpu[name] = self.w - self.w0, self.c - self.c0


def worker(variant: str, baked: Path) -> dict:
    load_at_start = os.getloadavg()[0]
    clock = Clock()
    import torch  # noqa: F401

    clock.lap("import_torch")
    timings: dict[str, float] = {}
    if variant.startswith("before"):
        import transformers  # noqa: F401

        clock.lap("import_transformers")
        import colpali_engine.models  # noqa: F401  (what families.classes() imported before)

        clock.lap("import_colpali")
        from engine.embedding import Embedder

        emb = Embedder(str(baked))  # the old defaults: sha256 verification, whole model
        clock.lap("load")
    else:  # the service's own sequence: everything after `import torch` happens inside Embedder()
        from engine.embedding import Embedder

        if variant == "after-api-noboost":
            from engine.embedding.baked import Prefetch

            Prefetch.boost = lambda self: None  # type: ignore[method-assign]

        emb = Embedder(str(baked), lazy_vision=variant.startswith("after-api"), verify="size")
        clock.lap("embedder")
        timings = {k: round(v, 3) for k, v in emb.timings.items()}
    clock.total("import_and_load")
    vision_at_start = emb.describe().get("vision", "loaded")
    emb.embed_queries(["total weight of the containers"])
    clock.lap("first_query")
    if variant.startswith("after-api"):
        emb.load_vision()
        clock.lap("deferred_vision_load")
    import importlib.util
    import resource

    return {
        "parts_s": {k: round(v, 3) for k, v in clock.wall.items()},
        "parts_cpu_s": {k: round(v, 3) for k, v in clock.cpu.items()},
        "installed": {d: importlib.util.find_spec(d) is not None for d in PRUNED},
        "imported": sorted(d for d in (*PRUNED, "scipy", "sympy", "torch._dynamo") if d in sys.modules),
        "bytecode": "from sys.pycache_prefix" if sys.pycache_prefix else "compiled at import",
        "families_imported": sorted(
            {m.split(".")[2] for m in sys.modules if m.startswith("colpali_engine.models.")}
        ),
        "loadavg_1m_at_start": round(load_at_start, 2),
        "embedder_timings_wall_s": timings,  # inside Embedder(): the family import and the weights' thread overlap
        "vision_after_load": vision_at_start,
        "compute": emb.plan.name,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def summary(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "runs": [round(v, 2) for v in values],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--baked", type=Path, default=BAKED)
    parser.add_argument("--label", default="coldstart")
    parser.add_argument(
        "--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated, 'before' first: {VARIANTS}"
    )
    parser.add_argument("--before-commit", default=BEFORE_COMMIT, help="the code measured as 'before'")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.code:
            sys.path.insert(0, str(args.code))  # the 'before' engine/ shadows today's
        print("RESULT " + json.dumps(worker(args.worker, args.baked)))
        return
    before_code = WORK / f"code-{args.before_commit}"
    if not (before_code / "engine").exists():
        before_code.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", args.before_commit, "engine"], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(before_code)], input=archive.stdout, check=True)
    manifest_path = args.baked / "manifest.json"
    if not manifest_path.exists() or "embedding_weights" not in json.loads(manifest_path.read_text()):
        # (a bake from before the manifest named its embedding weights is baked again)
        from models.bake import bake
        from models.tiny import build_fullsize_random

        if not (FULL / "config.json").exists():
            build_fullsize_random(FULL)
        bake(str(FULL), args.baked)
    from engine.embedding.baked import read_manifest, verify_files

    manifest = read_manifest(args.baked)
    t = time.perf_counter()
    verify_files(args.baked, manifest)  # also warms the page cache
    verify_s = time.perf_counter() - t
    variants = tuple(args.variants.split(","))
    assert variants[0] == "before" and set(variants) <= set(VARIANTS), variants
    tree = runtime_tree() if IN_TREE & set(variants) else None
    runs: dict[str, list[dict]] = {v: [] for v in variants}

    def run(variant: str, warmup: bool = False) -> dict:
        cmd, env = command(variant, args.baked, before_code, tree)
        if warmup:  # writes the bytecode the timed runs read (the image compiles it at build time)
            env.pop("PYTHONDONTWRITEBYTECODE")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        return json.loads(line[7:])

    for variant in variants:
        if variant != "before-source":
            run(variant, warmup=True)
    for rep in range(args.reps):
        order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
        for variant in order:
            runs[variant].append(run(variant))
            print(rep, variant, runs[variant][-1]["parts_s"], file=sys.stderr, flush=True)
            report(args, manifest, verify_s, runs, complete=False)  # what finished so far, if cut short
    report(args, manifest, verify_s, runs, complete=True)


def command(variant: str, baked: Path, before_code: Path, tree: Path | None) -> tuple[list[str], dict]:
    """The worker's command line and environment for a variant (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPYCACHEPREFIX", "PYTHONPATH")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if variant != "before-source":
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    worker_args = [__file__, "--worker", variant, "--baked", str(baked)]
    if variant.startswith("before"):
        worker_args += ["--code", str(before_code)]
    if variant in IN_TREE:
        assert tree is not None
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{tree}"
        base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
        return [base, "-S", *worker_args], env  # no site-packages: only the tree, as Lambda's task root
    env["PYTHONPATH"] = str(ROOT)
    return [sys.executable, *worker_args], env


def runtime_tree() -> Path:
    """The final image stage's dependency tree: pyproject's dependencies installed with `uv pip install
    --target` at the venv's exact versions, then pruned like Dockerfile.lambda does. Built once per input."""
    import hashlib
    import shutil

    from infra.prune_dists import prune

    uv = shutil.which("uv") or str(ROOT / ".stamps" / "bin" / "uv")
    freeze = subprocess.run(
        [uv, "pip", "freeze", "--python", sys.executable], capture_output=True, text=True, check=True
    ).stdout
    pins = "\n".join(x for x in freeze.splitlines() if not x.startswith("-e ") and " @ " not in x) + "\n"
    key = hashlib.sha256(
        pins.encode()
        + (ROOT / "pyproject.toml").read_bytes()
        + (ROOT / "infra" / "prune_dists.py").read_bytes()
    ).hexdigest()[:12]
    tree = WORK / f"runtime-deps-{key}"
    if (tree / ".complete").exists():
        return tree
    for old in WORK.glob("runtime-deps*"):
        shutil.rmtree(old)
    building = WORK / "runtime-deps.building"
    (WORK / "venv-pins.txt").write_text(pins)
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--target", str(building), "--python", sys.executable,
         "-r", str(ROOT / "pyproject.toml"), "-c", str(WORK / "venv-pins.txt")],
        check=True, cwd=ROOT,
    )  # fmt: skip
    print(f"runtime tree: {prune(building, list(PRUNED))} bytes pruned", file=sys.stderr)
    (building / ".complete").touch()
    building.rename(tree)
    return tree


def report(args: argparse.Namespace, manifest: dict, verify_s: float, runs: dict, complete: bool) -> None:
    from bench.common import write_result

    runs = {v: rs for v, rs in runs.items() if rs}
    if "before" not in runs:
        return
    parts = {
        v: {p: summary([r["parts_s"][p] for r in rs]) for p in rs[0]["parts_s"]} for v, rs in runs.items()
    }
    cpu = {
        v: {p: summary([r["parts_cpu_s"][p] for r in rs]) for p in rs[0]["parts_cpu_s"]}
        for v, rs in runs.items()
    }
    before = parts["before"]["import_and_load"]["median"]
    before_cpu = cpu["before"]["import_and_load"]["median"]
    payload = {
        "complete": complete,
        "repetitions_done": {v: len(rs) for v, rs in runs.items()},
        "model": "ColQwen2 architecture (Qwen2-VL-2B, random weights), baked int8, "
        f"{sum(f['bytes'] for f in manifest['files'].values()) / 1e9:.2f} GB",
        "method": "fresh process per measurement; variants alternate, order rotated per repetition; "
        "model file in the page cache (read by the sha256 verification first); load averages in details",
        "environments": {
            "venv": "the development virtualenv (peft, accelerate installed): before, before-source, after-api-venv",
            "runtime tree": "pyproject's dependencies by `uv pip install --target` at the venv's versions, "
            f"{', '.join(PRUNED)} removed by infra/prune_dists.py (as Dockerfile.lambda's final stage); "
            "`python -S`, PYTHONPATH=repo:tree: after-api, after-ingest, after-api-noboost",
            "bytecode": "compiled once by an untimed warm-up run per variant (PYTHONPYCACHEPREFIX), as the "
            "image compiles it at build time; before-source compiles at import, as cf89557's image did",
        },
        "reps": args.reps,
        "before_code": f"engine/ of git commit {args.before_commit}",
        "after_settings": "DOCVISION_VERIFY_WEIGHTS=size (as Dockerfile.lambda sets; its build checks the sha256s)",
        "verify_sha256_seconds_warm_cache": round(verify_s, 2),
        "parts_seconds": parts,
        "parts_cpu_seconds": cpu,
        "after_over_before": {
            v: round(parts[v]["import_and_load"]["median"] / before, 3) for v in runs if v != "before"
        },
        "after_over_before_source": {
            v: round(
                parts[v]["import_and_load"]["median"] / parts["before-source"]["import_and_load"]["median"], 3
            )
            for v in runs
            if v.startswith("after") and "before-source" in runs
        },
        "after_over_before_cpu": {
            v: round(cpu[v]["import_and_load"]["median"] / before_cpu, 3) for v in runs if v != "before"
        },
        "target": "after-api import_and_load <= 0.40 x before (both with bytecode: only the code differs)",
        "details": {
            v: [{k: r[k] for k in r if k not in ("parts_s", "parts_cpu_s")} for r in rs]
            for v, rs in runs.items()
        },
    }
    print(write_result(args.label, payload), file=sys.stderr)


if __name__ == "__main__":
    main()
