"""What each compute path may change in an embedding, so a test asserts the same thing on every CPU.

The compute plan (engine/embedding/compute.py) picks bf16 on CPUs with AMX or AVX512-BF16 (and on CUDA) and
fp32 activations with int8 GEMMs elsewhere (AVX2); a test that asserts fp32 tolerances passes on one machine
and fails on the other. The figures below were measured on the tiny models of every family
(``DOCVISION_COMPUTE=bf16`` simulates the AMX machine's plan, tests/conftest.py):

- unit norm: fp32 paths within 1.2e-7; bf16 within 2.7e-3..3.4e-3 (the vectors carry bf16's 8-bit mantissa);
- the same model loaded two ways (deferred vision tower vs eager): fp32 paths bit-equal; bf16 within one bf16
  ULP of a value below 1 (2**-8 = 3.9e-3): the kernels see the weights in another memory layout.
"""

from __future__ import annotations

from typing import Protocol

BF16_ULP = 2.0**-8  # the spacing of bfloat16 numbers in [0.5, 1)


class _Planned(Protocol):
    @property
    def plan(self) -> object: ...


def is_bf16(embedder: _Planned) -> bool:
    return getattr(embedder.plan, "dtype", "float32") == "bfloat16"


def norm_atol(embedder: _Planned) -> float:
    """How far from 1.0 a returned vector's norm may be."""
    return 2 * BF16_ULP if is_bf16(embedder) else 1e-4


def same_model_atol(embedder: _Planned) -> float:
    """How far apart two loads of the same weights may embed the same input."""
    return BF16_ULP if is_bf16(embedder) else 1e-6
