"""What this CPU offers for inference: the vector and matrix instructions that decide int8 and bf16 speed.

Read, never assumed: on Linux from the ``flags`` line of ``/proc/cpuinfo`` (what the kernel says the
CPU *and* the kernel support: AMX needs kernel support to be usable, and a VM may hide flags); elsewhere
from numpy's own run-time CPU dispatch table (``numpy._core._multiarray_umath.__cpu_features__``, which
asks CPUID on every OS). numpy's table names no AMX flags, so AMX is reported only from
``/proc/cpuinfo``; when neither source answers, no feature is reported and the precision choice
(:mod:`acfd.engine.precision`) stays at FP32.

The features that matter here (Linux flag names):

* ``avx2``, ``avx512f``: the FP32 kernels' width (ONNX Runtime's MLAS and oneDNN pick them at run time);
* ``avx512_vnni``, ``avx_vnni``: int8 dot products in one instruction (VNNI): what makes int8
  convolutions faster than FP32;
* ``avx512_bf16``: bf16 dot products (oneDNN's bf16 convolutions);
* ``amx_tile``, ``amx_int8``, ``amx_bf16``: Intel AMX tile matrix units (Sapphire Rapids and later).

Importing this module imports nothing heavy.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

# The flags reported, in the order they are printed.
FEATURES = (
    "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip
# numpy's CPU dispatch names for the same features (no AMX: numpy does not test for it).
_NUMPY_NAMES = {"AVX2": "avx2", "AVX512F": "avx512f", "AVX512VNNI": "avx512_vnni", "AVX512BF16": "avx512_bf16"}
CPUINFO = "/proc/cpuinfo"


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name and which of :data:`FEATURES` it has; ``source`` says where that was read."""

    model: str = "CPU"
    flags: frozenset[str] = frozenset()
    source: str = "unknown"  # "/proc/cpuinfo", "numpy", or "unknown" (nothing could be read)

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def vnni(self) -> bool:
        """int8 dot-product instructions (AVX-512 VNNI or AVX-VNNI)."""
        return self.has("avx512_vnni") or self.has("avx_vnni")

    @property
    def fast_int8(self) -> bool:
        """int8 convolutions beat FP32 here: VNNI or AMX-INT8."""
        return self.vnni or self.has("amx_int8")

    @property
    def fast_bf16(self) -> bool:
        """bf16 convolutions in hardware: AVX-512 BF16 or AMX-BF16."""
        return self.has("avx512_bf16") or self.has("amx_bf16")

    def int8_reason(self) -> str:
        """The flags that make int8 fast here, in words (for what-ran records)."""
        found = [f for f in ("amx_int8", "avx512_vnni", "avx_vnni") if self.has(f)]
        return "+".join(found) if found else "no VNNI/AMX"

    def bf16_reason(self) -> str:
        found = [f for f in ("amx_bf16", "avx512_bf16") if self.has(f)]
        return "+".join(found) if found else "no AVX-512 BF16/AMX-BF16"

    def describe(self) -> str:
        """``AMD EPYC: avx2 avx512f avx512_vnni avx_vnni avx512_bf16 (/proc/cpuinfo)``."""
        flags = " ".join(f for f in FEATURES if f in self.flags) or "none of " + ", ".join(FEATURES)
        return f"{self.model}: {flags} ({self.source})"

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "flags": [f for f in FEATURES if f in self.flags], "source": self.source}


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The features in the text of ``/proc/cpuinfo`` (x86: the first processor's ``flags`` line).

    A text without a ``flags`` line (another architecture, a container that hides it) gives no flags,
    with ``source`` "unknown" so the caller can ask elsewhere.
    """
    model, flags = "", None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = frozenset(value.split()) & set(FEATURES)
        if model and flags is not None:
            break
    if flags is None:
        return CpuFeatures(model=model or "CPU", source="unknown")
    return CpuFeatures(model=model or "CPU", flags=flags, source=CPUINFO)


def from_numpy() -> CpuFeatures | None:
    """The features numpy's run-time dispatch found (CPUID), or None when numpy does not say."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as table  # numpy >= 2
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as table  # numpy 1.x
        except ImportError:
            return None
    flags = frozenset(ours for name, ours in _NUMPY_NAMES.items() if table.get(name))
    return CpuFeatures(model=platform.processor() or platform.machine() or "CPU", flags=flags, source="numpy")


@functools.lru_cache(maxsize=1)
def detect() -> CpuFeatures:
    """This machine's CPU features (read once per process)."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            found = parse_cpuinfo(f.read())
        if found.source != "unknown":
            return found
    except OSError:
        found = None
    fallback = from_numpy()
    if fallback is not None:
        if found is not None and found.model != "CPU":
            fallback = CpuFeatures(model=found.model, flags=fallback.flags, source=fallback.source)
        return fallback
    return found or CpuFeatures()
