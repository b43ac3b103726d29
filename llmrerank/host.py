"""What this host is, for measurements kept per CPU (the int8 check, the backend timing, the
benchmarks): a figure measured on one CPU is not trusted on another.

A CPU's marketing name is not enough to say that. Under a hypervisor two quite different
CPUs can both read "AMD EPYC" (one with AVX-512 VNNI, one with AVX2 only), and ONNX
Runtime and torch pick different int8 and fp32 kernels for each, so a speed-up or an int8
rounding error measured on one says nothing about the other. The identity therefore names
the model, its family/model/stepping, the SIMD extensions the kernels choose between, and
the cores this process may use.
"""

from __future__ import annotations

import platform
from pathlib import Path

from ._concurrency import available_cores

__all__ = ["KERNEL_FEATURES", "cpu_identity", "host_cpu"]

#: CPU features whose presence changes which matrix kernels run (x86-64 ``flags``,
#: Arm ``Features`` in ``/proc/cpuinfo``); any other flag leaves the measurements alone.
KERNEL_FEATURES = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
)

_MODEL_KEYS = ("cpu family", "model", "stepping", "CPU implementer", "CPU part", "CPU variant")


def cpu_identity(cpuinfo: str, cores: int) -> str:
    """The identity of the CPU described by ``cpuinfo`` (the text of ``/proc/cpuinfo``),
    with ``cores`` usable, e.g. ``"AMD EPYC (family 25 model 1 stepping 1; avx avx2 f16c
    fma; 2 cores)"``. Only the first processor's block is read: every core of one host
    is alike."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    model = " ".join(
        f"{key.removeprefix('cpu ').removeprefix('CPU ')} {fields[key]}"
        for key in _MODEL_KEYS
        if key in fields
    )
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    features = " ".join(sorted(flags.intersection(KERNEL_FEATURES))) or "no SIMD features listed"
    count = f"{cores} core" if cores == 1 else f"{cores} cores"
    return f"{name} ({model + '; ' if model else ''}{features}; {count})"


def host_cpu() -> str:
    """This host's CPU identity (see ``cpu_identity``); where there is no ``/proc/cpuinfo``
    (macOS, Windows) the platform's processor name stands in for the model."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return cpu_identity(cpuinfo, available_cores())
