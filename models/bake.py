"""Bake a ColPali-family model into the image format: adapter merged, linears int8, manifest with hashes.

    python -m models.bake vidore/colqwen2-v1.0 models/baked            # hub id (network at build time)
    python -m models.bake /models/colqwen2-v1.0 models/baked           # local dir: full model or LoRA adapter
    python -m models.bake models/tiny-colqwen2 /tmp/baked-tiny         # what the tests do
    python -m models.bake SRC OUT --backend openvino                  # + the OpenVINO export and its A/B

``--backend openvino`` (ColQwen2) also exports the fp32 model to OpenVINO graphs with int8 weights (NNCF) under
``OUT/openvino/`` (engine/embedding/openvino_backend.py), then runs an in-process A/B of the two backends on
this machine's CPU class (``--ab-reps``, 0 skips it) and records it in the manifest (``backend_ab``): the
Embedder's ``auto`` backend follows it on that CPU class, torch on classes never measured.

A LoRA adapter directory (adapter_config.json) is merged into its base model (`base_model_name_or_path`,
a hub id or a local dir; override with --base). The output is written to a temp dir and renamed, so a
half-baked directory never exists under the final name.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from engine.embedding.baked import (
    embedding_weights,
    model_identity,
    quantized_state_dict,
    state_digest,
    write_manifest,
)
from engine.embedding.loader import load_source
from engine.embedding.storage import count_page_vectors

log = logging.getLogger("bake")
PROCESSOR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json",
    "processor_config.json", "chat_template.json", "chat_template.jinja", "video_preprocessor_config.json",
    "vocab.json", "merges.txt", "added_tokens.json", "tokenizer.model",
)  # fmt: skip


def missing_local_source(source: str) -> str | None:
    """Why `source` names a local model directory that is not there, else None (it is there, or a hub id).

    "models/colqwen2-v1.0" and "./x" are paths (their first part is a folder here, or they start with . or /);
    "vidore/colqwen2-v1.0" is a hub id. Without this a missing folder (left out of a docker build context by
    .dockerignore, say) is taken for a hub id and fails offline with a hub error that never names the folder.
    """
    path = Path(source)
    if path.is_dir():
        return None
    looks_local = source.startswith((".", "/", "~")) or (len(path.parts) > 1 and Path(path.parts[0]).is_dir())
    if not looks_local:
        return None
    return (
        f"model directory {source!r} not found (cwd {Path.cwd()}). In a docker build the folder must be inside "
        "the build context and not excluded by .dockerignore (models/tiny-* is: use MODEL_SOURCE=tiny to make "
        "the test model in the build)."
    )


def bake(
    source: str,
    out: Path,
    *,
    revision: str | None = None,
    base: str | None = None,
    family: str | None = None,
    backend: str = "torch",
    ab_reps: int = 3,
) -> dict:
    from safetensors.torch import save_file

    started = time.perf_counter()
    model, processor, fam, rev = load_source(
        source, revision=revision, base=base, family_name=family, dtype=torch.float32
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        work = Path(tmp)
        state = quantized_state_dict(model)
        save_file(
            state, work / "model.safetensors", metadata={"format": "pt", "quantization": "int8-per-channel"}
        )
        model.config.save_pretrained(work)
        processor.save_pretrained(work)
        n_int8 = sum(t.numel() for t in state.values() if t.dtype == torch.int8)
        n_all = sum(t.numel() for k, t in state.items() if not k.endswith("_scale"))
        local = Path(source).is_dir()
        manifest = write_manifest(
            work,
            # a local directory's path is recorded for provenance only: model_identity() ignores it
            source={"id": source, "revision": rev, "base": base, "kind": "local" if local else "hub"},
            family=fam.name,
            model_class=fam.model_class,
            embedding_dim=int(getattr(model, "dim", 128)),
            page_vectors=count_page_vectors(processor),  # a US-letter page; the storage plan reads it
            parameters=n_all,
            int8_fraction=round(n_int8 / n_all, 4),
            bake_seconds=round(time.perf_counter() - started, 1),
            tiny_random=(Path(source) / "TINY_MODEL.json").exists(),
            weights_digest=state_digest(state),
            embedding_weights=embedding_weights(model),  # lets a cold start prepack before the model exists
        )
        manifest["model_id"] = model_identity(manifest)
        if backend == "openvino":
            from engine.embedding import openvino_backend as ovb
            from engine.errors import ConfigError

            if fam.name not in ovb.SUPPORTED_FAMILIES:
                raise ConfigError(
                    f"--backend openvino exports {', '.join(ovb.SUPPORTED_FAMILIES)}, not {fam.name}"
                )
            manifest["openvino"] = ovb.export(model, processor, work) | {"files": ovb.export_files(work)}
        elif backend != "torch":
            raise SystemExit(f"--backend must be torch or openvino, not {backend!r}")
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for f in work.rglob("*"):
            f.chmod(0o755 if f.is_dir() else 0o644)
        work.chmod(0o755)  # the Lambda runtime user is not the build user
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
        Path(tmp).mkdir()  # TemporaryDirectory cleanup expects its folder
    if backend == "openvino" and ab_reps > 0:
        from engine.embedding import openvino_backend as ovb

        del model  # the A/B loads both backends from the baked directory
        ab = ovb.run_ab(out, reps=ab_reps)
        manifest = ovb.record_ab(out, ab["cpu_class"], ab)
        log.info(
            "backend A/B on %s: %s",
            ab["cpu_class"],
            {k: ab[k] for k in ("torch_s_per_page", "openvino_s_per_page", "winner")},
        )
    log.info(
        "baked %s → %s (%s, %.1f%% int8) in %.1f s",
        source,
        out,
        fam.name,
        100 * manifest["int8_fraction"],
        time.perf_counter() - started,
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="hub id or local model/adapter directory")
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--revision", help="hub revision (tag, branch or commit) to pin")
    parser.add_argument(
        "--base", help="base model for a LoRA adapter (default: the adapter's base_model_name_or_path)"
    )
    parser.add_argument("--family", help="model family (default: detected from config)")
    parser.add_argument(
        "--backend", choices=("torch", "openvino"), default="torch", help="also export for OpenVINO"
    )
    parser.add_argument(
        "--ab-reps", type=int, default=3, help="alternating reps of the backend A/B (0: none)"
    )
    args = parser.parse_args(argv)
    missing = missing_local_source(args.source)
    if missing:
        print(f"bake: error [model_source_missing]: {missing}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    manifest = bake(
        args.source, args.out, revision=args.revision, base=args.base, family=args.family,
        backend=args.backend, ab_reps=args.ab_reps,
    )  # fmt: skip
    print(json.dumps({k: v for k, v in manifest.items() if k != "files"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
