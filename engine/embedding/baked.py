"""The baked model format: int8 weight-only (per output channel) safetensors + manifest with hashes.

    <dir>/manifest.json     source id + revision, family, embedding dim, quantization, sha256 of every file
    <dir>/model.safetensors int8 weights (`<module>.weight`) with fp32 scales (`<module>.weight_scale`),
                            everything else in its original dtype
    <dir>/config.json, tokenizer/processor files

Loading needs no network, verifies the files against the manifest (sizes always; sha256 unless the weights are
pinned by something stronger, such as the container image's digest: `DOCVISION_VERIFY_WEIGHTS=size`), and turns
the int8 weights into what the compute plan runs on. A cold start reads and prepacks the weights in a background
thread (prefetch) while Python imports transformers and the model family: the two overlap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.embedding.manifest import (  # noqa: F401 (re-exported: the baked format's public names)
    FORMAT_VERSION,
    QUANT_SCHEME,
    QUANT_TAG,
    baked_identity,
    model_identity,
    read_manifest,
)
from engine.errors import ModelIntegrityError

log = logging.getLogger(__name__)

SCALE_SUFFIX = "_scale"
MIN_QUANT_NUMEL = 4096  # tiny matrices (and every 1-D tensor) stay in full precision


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in name order: the weights, not the file."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def quantize_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w32 = w.detach().float()
    scale = (w32.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w32 / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def quantizable(model: nn.Module) -> set[str]:
    """Names of weights to store as int8: every Linear and Embedding matrix above MIN_QUANT_NUMEL."""
    names = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Linear | nn.Embedding) and mod.weight.numel() >= MIN_QUANT_NUMEL:
            names.add(f"{mod_name}.weight")
    return names


def embedding_weights(model: nn.Module) -> list[str]:
    """The int8 weights that belong to nn.Embedding (looked up, never multiplied): recorded in the manifest so a
    loader can tell them from Linear weights before the model class is even imported (see prefetch)."""
    targets = quantizable(model)
    return sorted(
        f"{n}.weight"
        for n, m in model.named_modules()
        if isinstance(m, nn.Embedding) and f"{n}.weight" in targets
    )


def quantized_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    targets = quantizable(model)
    out: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen and tensor.numel() > 0:  # tied weights are stored once
            continue
        seen[tensor.data_ptr()] = name
        if name in targets:
            q, scale = quantize_per_channel(tensor)
            out[name], out[name + SCALE_SUFFIX] = q.contiguous(), scale.contiguous()
        else:
            out[name] = tensor.detach().contiguous().clone()
    return out


def write_manifest(directory: Path, **info: Any) -> dict:
    files = {
        p.relative_to(directory).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(directory.rglob("*"))
        # the OpenVINO export has its own file list (manifest["openvino"]["files"]): verified only when that
        # backend loads, so a torch cold start never hashes it
        if p.is_file() and p.name != "manifest.json" and p.relative_to(directory).parts[0] != "openvino"
    }
    manifest = {
        "format_version": FORMAT_VERSION,
        "quantization": QUANT_SCHEME,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **info,
        "files": files,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


VERIFY_LEVELS = ("sha256", "size")


def verify_files(directory: Path, manifest: dict, level: str = "sha256") -> None:
    """Sizes first (cheap, catches truncation), then (level "sha256") the sha256 of every file."""
    level = verify_level(level)
    for rel, meta in manifest["files"].items():
        path = directory / rel
        if not path.exists():
            raise ModelIntegrityError(f"baked model file {path} is missing; rebuild the model directory")
        if path.stat().st_size != meta["bytes"]:
            raise ModelIntegrityError(
                f"baked model file {path} is {path.stat().st_size} bytes, manifest says {meta['bytes']} (truncated?); rebuild it"
            )
    if level == "size":
        return
    for rel, meta in manifest["files"].items():
        if sha256_file(directory / rel) != meta["sha256"]:
            raise ModelIntegrityError(
                f"baked model file {directory / rel} does not match its sha256 in manifest.json (tampered or corrupt)"
            )


def _int8_linear(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A dynamic-quantized Linear built straight from our int8 weights (no dequantize/requantize round trip)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    out_f, in_f = q.shape
    with (
        warnings.catch_warnings()
    ):  # "deprecated in favour of torchao": still the fbgemm dynamic-int8 path on CPU
        warnings.simplefilter("ignore")
        qw = torch._make_per_channel_quantized_tensor(
            q, scale.to(torch.float64), torch.zeros(out_f, dtype=torch.int64), 0
        )
        # Built 1x1, then given its real weight: DynamicLinear(in_f, out_f) first prepacks a full-size zero matrix,
        # which was 14 of the 33 s a cProfile of a cold start here spent in fbgemm's prepack.
        layer = DynamicLinear(1, 1, bias_=bias is not None, dtype=torch.qint8)
        layer.in_features, layer.out_features = in_f, out_f
        layer.set_weight_bias(qw, None if bias is None else bias.float())
    return layer


def _read_tensors(weights: Path, keep: Any) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(weights, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if keep(k)}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own error types for truncated headers
        raise ModelIntegrityError(f"cannot read {weights} ({exc}); rebuild the model directory") from exc


def verify_level(verify: str | bool) -> str:
    """The verification level from a setting: "sha256" | "size", or the older boolean (True = sha256)."""
    if isinstance(verify, bool):
        return "sha256" if verify else "size"
    if verify not in VERIFY_LEVELS:
        raise ValueError(f"verify level {verify!r}: use one of {VERIFY_LEVELS}")
    return verify


def _prepack_workers(threads: int | None = None, *, all_cpus: bool = False) -> int:
    """Threads for fbgemm's prepack (single-threaded per layer, GIL released): the CPUs the model may use (the
    compute plan's threads, within this process's affinity); while a cold start's Python imports still occupy
    one of them (prefetch, before boost()), one fewer. On 2 vCPUs: 1, then 2; on a 10 GB Lambda's 6: 5, then 6."""
    cpus = len(os.sched_getaffinity(0))
    usable = max(1, min(threads or cpus, cpus))
    return usable if all_cpus else max(1, usable - 1)


def _run_jobs(
    jobs: list[Any], build: Callable[[Any], nn.Module], threads: int | None, wide: threading.Event | None
) -> dict[str, nn.Module]:
    """build(job) for every job from one shared queue, on the calling thread plus helper threads: all but one
    of the CPUs while `wide` is unset (the imports beside it hold one), all of them once it is set (checked
    between layers, so a boost is taken up within one layer's prepack). Results in job order."""
    queue, results = deque(jobs), {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def take() -> Any:
        with lock:
            return queue.popleft() if queue and not errors else None

    def drain() -> None:
        while (job := take()) is not None:
            try:
                results[job[0]] = build(job)
            except BaseException as exc:  # noqa: BLE001 (re-raised by the calling thread)
                errors.append(exc)
                return

    helpers: list[threading.Thread] = []
    try:
        while True:
            wanted = _prepack_workers(threads, all_cpus=wide is None or wide.is_set())
            while len(helpers) + 1 < min(wanted, len(queue)):
                helpers.append(threading.Thread(target=drain, name="docvision-prepack", daemon=True))
                helpers[-1].start()
            if (job := take()) is None:
                break
            try:
                results[job[0]] = build(job)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                break
    finally:
        for t in helpers:
            t.join()
    if errors:
        raise errors[0]
    return {job[0]: results[job[0]] for job in jobs}


def _materialize(
    state: dict[str, torch.Tensor],
    kind: Callable[[str], str | None],
    dtype: torch.dtype,
    int8_gemm: bool,
    *,
    threads: int | None = None,
    stop: threading.Event | None = None,
    wide: threading.Event | None = None,
) -> dict[str, nn.Module]:
    """int8 weights → compute-dtype tensors in `state` (in place), or int8 GEMM modules (returned).
    `kind(module name)` is "linear", "other" (e.g. an Embedding) or None (the model has no such module).
    `stop` (set by the caller) abandons the work between layers; `wide` (see _run_jobs) widens the prepack
    from all CPUs but one to all of them (None: all of them from the start)."""
    jobs: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    for key in [k for k in state if k.endswith(SCALE_SUFFIX)]:
        scale, wkey = state.pop(key), key[: -len(SCALE_SUFFIX)]
        q = state.pop(wkey)
        mod_name = wkey.rsplit(".", 1)[0]
        mod_kind = kind(mod_name)
        if mod_kind is None:
            raise ModelIntegrityError(f"baked weights name a module the model does not have: {mod_name}")
        if int8_gemm and mod_kind == "linear":
            jobs.append((mod_name, q, scale, state.pop(f"{mod_name}.bias", None)))
            continue
        # Dequantize straight into the compute dtype: int8 values are exact in bf16, so one rounding of the
        # product; no fp32 temporaries (3x less memory traffic, most of the load time on 2 cores).
        state[wkey] = q.to(dtype).mul_(scale.to(dtype)[:, None])
    for name, tensor in state.items():
        if tensor.is_floating_point() and tensor.dtype != dtype:
            state[name] = tensor.to(dtype)

    def build(job: tuple[str, torch.Tensor, torch.Tensor, torch.Tensor | None]) -> nn.Module:
        if stop is not None and stop.is_set():
            raise CancelledError("weight prefetch abandoned")
        return _int8_linear(*job[1:])

    return _run_jobs(jobs, build, threads, wide)


def _module_kind(modules: dict[str, nn.Module]) -> Callable[[str], str | None]:
    def kind(name: str) -> str | None:
        mod = modules.get(name)
        return None if mod is None else "linear" if isinstance(mod, nn.Linear) else "other"

    return kind


@dataclass
class Prefetched:
    """Weights read, verified and turned into compute form before the model object exists."""

    manifest: dict
    state: dict[str, torch.Tensor]
    int8_modules: dict[str, nn.Module]
    seconds: float  # from the start of the prefetch thread to ready
    parts: dict[str, float]  # verify, read, materialize seconds


@dataclass
class Prefetch:
    """A prefetch in flight: its result, what it was started for, and a way to abandon it."""

    future: Future[Prefetched]
    key: tuple  # (directory, dtype, int8_gemm, defer_prefix): load_baked refuses a prefetch made for another load
    stop: threading.Event
    wide: threading.Event
    started: float = field(default_factory=time.perf_counter)
    boosted: float | None = None  # perf_counter() of boost()

    def result(self) -> Prefetched:
        return self.future.result()

    def cancel(self) -> None:
        """Stop prepacking at the next layer (e.g. the model classes failed to import)."""
        self.stop.set()

    def boost(self) -> None:
        """Prepack on every CPU from the next layer on: the caller has finished its imports and now waits for
        the weights (load_baked calls this), so the CPU the prefetch left to it is free."""
        if not self.wide.is_set():
            self.boosted = time.perf_counter()
            self.wide.set()


def prefetch(
    directory: Path,
    *,
    dtype: torch.dtype,
    int8_gemm: bool,
    verify: str | bool = "sha256",
    defer_prefix: str | None = None,
    threads: int | None = None,
) -> Prefetch:
    """Start verifying, reading and prepacking the baked weights in a background thread; returns at once.

    A cold start is mostly two things that need not wait for each other: Python importing transformers and the
    model family (one core, holding the GIL) and fbgemm prepacking the int8 weights (C++, GIL released). Needs
    only torch and the manifest's `embedding_weights` (which int8 weights are not Linear); an older manifest
    without it gets the read ahead of time and the materialization afterwards, in load_baked.
    """
    level = verify_level(verify)
    future: Future[Prefetched] = Future()
    stop, wide = threading.Event(), threading.Event()

    def work() -> None:
        try:
            started = time.perf_counter()
            manifest = read_manifest(directory)
            verify_files(directory, manifest, level)
            verified = time.perf_counter()
            state = _read_tensors(
                directory / "model.safetensors", lambda k: not (defer_prefix and k.startswith(defer_prefix))
            )
            read = time.perf_counter()
            int8_modules: dict[str, nn.Module] = {}
            if "embedding_weights" in manifest:
                embeddings = {w.rsplit(".", 1)[0] for w in manifest["embedding_weights"]}
                int8_modules = _materialize(
                    state, lambda n: "other" if n in embeddings else "linear", dtype, int8_gemm,
                    threads=threads, stop=stop, wide=wide,
                )  # fmt: skip
            done = time.perf_counter()
            parts = {"verify": verified - started, "read": read - verified, "materialize": done - read}
            future.set_result(Prefetched(manifest, state, int8_modules, done - started, parts))
        except BaseException as exc:  # noqa: BLE001 (handed to the waiting loader, raised there)
            future.set_exception(exc)

    future.set_running_or_notify_cancel()
    threading.Thread(target=work, name="docvision-prefetch", daemon=True).start()
    return Prefetch(future, (Path(directory).resolve(), dtype, int8_gemm, defer_prefix), stop, wide)


def _install(model: nn.Module, modules: dict[str, nn.Module], int8_modules: dict[str, nn.Module]) -> None:
    for mod_name, layer in int8_modules.items():
        parent, _, child = mod_name.rpartition(".")
        setattr(modules[parent] if parent else model, child, layer)


def load_deferred(
    model: nn.Module, directory: Path, prefix: str, *, dtype: torch.dtype, int8_gemm: bool
) -> float:
    """Load the tensors load_baked(defer_prefix=prefix) left out, into the live model; returns seconds.

    Copied in place into the placeholder tensors (so patches that share their storage, like
    fast.linear_patch_embed's reshaped view, see the real weights), int8 Linear layers installed as at load.
    """
    started = time.perf_counter()
    state = _read_tensors(directory / "model.safetensors", lambda k: k.startswith(prefix))
    modules = dict(model.named_modules())
    int8_modules = _materialize(state, _module_kind(modules), dtype, int8_gemm)
    current = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, tensor in state.items():
            if name not in current or current[name].numel() != tensor.numel():
                raise ModelIntegrityError(f"{directory}: deferred tensor {name} does not fit the model")
            current[name].copy_(tensor.reshape(current[name].shape))
    _install(model, modules, int8_modules)
    seconds = time.perf_counter() - started
    log.info("loaded deferred weights %s* of %s in %.2f s", prefix, directory, seconds)
    return seconds


def load_baked(
    directory: Path,
    model_cls: type,
    *,
    dtype: torch.dtype,
    int8_gemm: bool,
    verify: str | bool = "sha256",
    defer_prefix: str | None = None,
    prefetched: Prefetch | None = None,
    threads: int | None = None,
) -> tuple[nn.Module, dict]:
    """The baked model, ready to run. With `defer_prefix` (e.g. "visual."), those tensors are left as
    uninitialised placeholders (never read, never resident) until load_deferred() — the API's queries are
    text-only, so its cold start skips the vision tower. `prefetched` (from prefetch(), same directory, dtype,
    plan and prefix) supplies weights already read and prepacked while the caller imported `model_cls`."""
    from transformers import AutoConfig
    from transformers.initialization import no_init_weights

    started = time.perf_counter()
    level = verify_level(verify)
    weights = directory / "model.safetensors"
    if prefetched is None:  # read now, beside building the model object
        prefetched = prefetch(
            directory,
            dtype=dtype,
            int8_gemm=int8_gemm,
            verify=level,
            defer_prefix=defer_prefix,
            threads=threads,
        )
    elif prefetched.key != (Path(directory).resolve(), dtype, int8_gemm, defer_prefix):
        raise ValueError(f"prefetch made for {prefetched.key}, not for this load of {directory}")
    config = AutoConfig.from_pretrained(directory)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(
        dtype
    )  # placeholder parameters in the compute dtype (never touched, replaced below)
    try:
        with no_init_weights():
            model = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    prefetched.boost()  # from here this thread only waits: the prepack may take its CPU too
    ready = prefetched.result()
    manifest, state, int8_modules = ready.manifest, ready.state, ready.int8_modules
    modules = dict(model.named_modules())
    kind = _module_kind(modules)
    for name in int8_modules:  # prepacked from the manifest's word: the model must agree
        if kind(name) is None:
            raise ModelIntegrityError(f"baked weights name a module the model does not have: {name}")
        if kind(name) != "linear":
            raise ModelIntegrityError(
                f"{weights}: {name} was baked as a Linear layer but the model has {type(modules.get(name)).__name__}"
                "; rebuild the model directory"
            )
    int8_modules.update(_materialize(state, kind, dtype, int8_gemm, threads=threads))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    _install(model, modules, int8_modules)
    replaced = tuple(f"{m}." for m in int8_modules)
    missing = [n for n in missing if not n.startswith(replaced)]
    if defer_prefix:
        missing = [n for n in missing if not n.startswith(defer_prefix)]
    if unexpected:
        raise ModelIntegrityError(f"{weights} holds tensors the model does not have: {unexpected[:5]}")
    model.tie_weights()
    still_missing = [n for n in missing if not _is_tied(model, n)]
    if still_missing:
        raise ModelIntegrityError(f"{weights} lacks tensors the model needs: {still_missing[:5]}")
    model.eval()
    log.info(
        "loaded baked model %s in %.2f s (verify=%s; reading and prepacking the weights took %.2f s)",
        directory, time.perf_counter() - started, level, ready.seconds,
    )  # fmt: skip
    return model, manifest


def _is_tied(model: nn.Module, name: str) -> bool:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return name in tied
