"""Choose how to run the model on this machine: device, compute dtype, weight format, threads.

cuda            → bf16 on the GPU (bulk backfills)
CPU with AMX or AVX512-BF16 → bf16 compute (oneDNN uses AMX tiles / VNNI-BF16)
other CPUs (AVX2, AVX512 without BF16) → fp32 activations with int8 weights and dynamic int8 GEMMs
                  (fbgemm), since bf16 there is emulated and slower than fp32
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ComputePlan:
    device: str  # "cpu" | "cuda"
    dtype: str  # "bfloat16" | "float32"
    int8_gemm: bool  # dynamic int8 linears (CPU without native bf16)
    threads: int
    reason: str

    @property
    def name(self) -> str:
        return f"{self.device}-{self.dtype}{'-int8' if self.int8_gemm else ''}"


def _onednn_isa_capped() -> bool:
    """ONEDNN_MAX_CPU_ISA below AMX/BF16 means the user (or a benchmark) wants the non-bf16 path."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return bool(cap) and not any(k in cap for k in ("AMX", "BF16", "ALL", "DEFAULT"))


def cpu_class(flags: set[str] | None = None) -> str:
    """The CPU class a backend A/B is recorded under: what the matrix units can do with oneDNN's cap applied.

    amx (AMX-BF16/INT8 tiles), avx512-bf16, avx512-vnni, avx512, avx2, other."""
    flags = cpu_flags() if flags is None else flags
    capped = _onednn_isa_capped()
    if "amx_bf16" in flags and not capped:
        return "amx"
    if "avx512_bf16" in flags and not capped:
        return "avx512-bf16"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "other"


def choose(mode: str = "auto", threads: int | None = None) -> ComputePlan:
    import torch

    n = threads or available_cpus()
    if mode == "auto":
        flags = cpu_flags()
        if torch.cuda.is_available():
            mode, why = "cuda", f"CUDA device {torch.cuda.get_device_name(0)}"
        elif {"amx_bf16", "avx512_bf16"} & flags and not _onednn_isa_capped():
            mode, why = "bf16", "CPU has " + ("AMX" if "amx_bf16" in flags else "AVX512-BF16")
        else:
            isa = "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "baseline x86/ARM"
            mode, why = "int8", f"CPU has no native bf16 ({isa}); int8 GEMMs with fp32 activations"
    else:
        why = "set by DOCVISION_COMPUTE"
    plans = {
        "cuda": ComputePlan("cuda", "bfloat16", False, n, why),
        "bf16": ComputePlan("cpu", "bfloat16", False, n, why),
        "fp32": ComputePlan("cpu", "float32", False, n, why),
        "int8": ComputePlan("cpu", "float32", True, n, why),
    }
    if mode not in plans:
        from engine.errors import ConfigError

        raise ConfigError(f"DOCVISION_COMPUTE={mode!r} is not one of auto, {', '.join(plans)}")
    plan = plans[mode]
    if plan.device == "cpu":
        torch.set_num_threads(plan.threads)
    log.info("compute path %s with %d threads (%s)", plan.name, plan.threads, plan.reason)
    return plan
