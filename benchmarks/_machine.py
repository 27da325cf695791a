"""What machine a benchmark ran on, for its table: the CPU's model name and the instruction-set features that
change llama.cpp's kernels, whether it has AMX, and the kaiyuan commit. Shared by every benchmark script."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuInfo", "cpu_info", "git_commit"]

# AVX2/FMA/F16C (llama.cpp's x86 baseline), AVX-512 and its VNNI/BF16 parts, AMX.
_FEATURES = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: tuple[str, ...]
    cpus: int

    @property
    def has_amx(self) -> bool:
        """Intel AMX: llama.cpp's AMX path (weight repacking) dies on these machines at the first decode
        (SIGILL/SIGSEGV), so llama.cpp's tools get ``--no-repack``, as kaiyuan loads weights there."""
        return "amx_tile" in self.flags

    def describe(self) -> str:
        return f"{self.model} ({self.cpus} CPUs; {' '.join(self.flags) or 'no AVX2'})"


def cpu_info() -> CpuInfo:
    """The CPU this runs on (Linux: /proc/cpuinfo; elsewhere what the platform module knows, no flags)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return CpuInfo(
        model=model or platform.processor() or platform.machine(),
        flags=tuple(f for f in _FEATURES if f in flags),
        cpus=os.cpu_count() or 1,
    )


def git_commit() -> str | None:
    """The kaiyuan commit the benchmark ran (short hash), None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
        )
    except OSError:
        return None
    return out.stdout.strip() or None
