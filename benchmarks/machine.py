"""Where a benchmark ran, as one string for its results JSON.

One training moves by ~0.02 AP between CPUs and a 2-core VM's speed differs up to 2.4x between
machines of one make (AVX-512 or not), so rows record the CPU model and its widest vector units.
Imported by the benchmark scripts, which run with ``benchmarks/`` on ``sys.path``.
"""

from __future__ import annotations

import os
from pathlib import Path

UNITS = ("avx512f", "avx512_bf16", "amx_bf16")


def describe() -> str:
    """``"MODEL (UNITS), N cores"``, e.g. ``"AMD EPYC (avx512f), 2 cores"``."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    names = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")]
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    units = [u for u in UNITS if u in flags]
    return f"{names[0] if names else '?'} ({', '.join(units) or 'avx2 or less'}), {os.cpu_count()} cores"
