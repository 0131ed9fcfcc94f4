"""The machine a speed run measured: CPU vendor and features, BLAS/LAPACK, run metadata."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from collections.abc import Sequence

import torch

import pml_anticollapse

from .._shared import cpu_model, git_commit
from .implementations import EPS_SQ
from .timing import CLOCK_NAMES


def cpu_vendor() -> str:
    """The CPU vendor as ``/proc/cpuinfo`` names it (GenuineIntel, AuthenticAMD, …), else
    ``platform.machine()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("vendor_id", "CPU implementer")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


#: The instruction-set flags that change which GEMM kernels run (bf16 autocast: AMX / AVX512-BF16)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_features() -> dict:
    """CPU family / model numbers and which of ``CPU_FLAGS`` the CPU has (``/proc/cpuinfo``;
    empty elsewhere): two CPUs with the same model name can differ here (a cloud VM's "Intel
    Xeon Processor" may be a Cascade Lake or an Emerald Rapids with AMX)."""
    info: dict = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("cpu family", "model", "stepping") and key not in info:
                    info[key] = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    info["flags"] = [f for f in CPU_FLAGS if f in flags]
                    break
    except OSError:
        pass
    return info


def linalg_backend() -> dict:
    """The BLAS/LAPACK torch was built with and runs on (from ``torch.__config__``): what decides
    the speed of the GEMMs, factorisations and triangular solves timed here."""
    show = torch.__config__.show()

    def setting(key: str) -> str | None:
        m = re.search(rf"\b{key}=([^,\s]+)", show)
        return m.group(1) if m else None

    mkl = re.search(r"Math Kernel Library Version ([^\n]+)", show)
    par = re.search(r"ATen parallel backend: ([^\n]+)", torch.__config__.parallel_info())
    return {
        "blas": setting("BLAS_INFO"),
        "lapack": setting("LAPACK_INFO"),
        "mkl_available": torch.backends.mkl.is_available(),
        "mkl_version": mkl.group(1).strip() if mkl else None,
        "openmp": torch.backends.openmp.is_available(),
        "parallel_backend": par.group(1).strip() if par else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def metadata(
    devices: Sequence[str], configs: Sequence[tuple[int, str]], argv: Sequence[str]
) -> dict:
    import pytorch_metric_learning

    names = {"cpu": f"{cpu_model()} ({os.cpu_count()} logical CPUs)"}
    if "cuda" in devices:
        names["cuda"] = torch.cuda.get_device_name()
    return {
        "commit": git_commit(short=True) or "unknown",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.speed " + " ".join(argv),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pml_anticollapse": pml_anticollapse.__version__,
            "pytorch_metric_learning": pytorch_metric_learning.__version__,
        },
        "device": names,
        "cpu_model": cpu_model(),
        "cpu_vendor": cpu_vendor(),
        "cpu_features": cpu_features(),
        "logical_cpus": os.cpu_count(),
        "linalg_backend": linalg_backend(),
        # one entry per measured configuration: intra-op threads and the clock
        "configs": [{"threads": t, "clock": c} for t, c in configs],
        "threads": [t for t, _ in configs],
        "clock": [CLOCK_NAMES[c] for _, c in configs],
        "platform": platform.platform(),
        "eps_sq": EPS_SQ,
    }


def loadavg() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None
