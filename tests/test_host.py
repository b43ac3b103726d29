"""A CPU's identity, which keys every per-host measurement (the int8 check, the backend
timing): two CPUs that share a marketing name but not their SIMD kernels are two CPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrerank._concurrency import available_cores
from llmrerank.host import cpu_identity, host_cpu
from llmrerank.rerankers import onnx_backend

from .test_int8_auto import RECIPE, check

# two KVM guests as seen here: both "AMD EPYC", one Zen 3 (AVX2), one Zen 4 (AVX-512 VNNI)
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse sse2 avx fma f16c avx2 bmi2 sha_ni vaes

processor\t: 1
model name\t: AMD EPYC
"""
ZEN4 = ZEN3.replace("model\t\t: 1", "model\t\t: 17").replace(
    "avx2 bmi2", "avx2 bmi2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16"
)
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp sve i8mm bf16
CPU implementer\t: 0x41
CPU variant\t: 0x1
CPU part\t: 0xd40
"""


def test_a_shared_marketing_name_with_other_kernels_is_another_cpu() -> None:
    zen3, zen4 = cpu_identity(ZEN3, 2), cpu_identity(ZEN4, 2)
    assert zen3 == "AMD EPYC (family 25 model 1 stepping 1; avx avx2 f16c fma; 2 cores)"
    assert zen4.startswith("AMD EPYC (family 25 model 17 stepping 1; ")
    assert "avx512_vnni" in zen4
    assert zen3 != zen4
    # an int8 check recorded on the Zen 4 guest does not let the Zen 3 guest use int8
    refusal = onnx_backend.int8_refusal(check(cpu=zen4), zen3, RECIPE)
    assert refusal is not None
    assert "not on this CPU" in refusal
    assert onnx_backend.int8_refusal(check(cpu=zen3), zen3, RECIPE) is None


def test_the_cores_a_process_may_use_are_part_of_the_identity() -> None:
    assert cpu_identity(ZEN3, 2) != cpu_identity(ZEN3, 8)
    assert cpu_identity(ZEN3, 1).endswith("; 1 core)")


def test_arm_cpus_are_named_by_implementer_part_and_features() -> None:
    identity = cpu_identity(GRAVITON, 4)
    assert "implementer 0x41 part 0xd40 variant 0x1" in identity
    assert identity.endswith("; asimd asimddp bf16 i8mm sve; 4 cores)")


def test_no_cpuinfo_still_gives_a_stable_identity() -> None:
    assert cpu_identity("", 2) == cpu_identity("", 2)
    assert "no SIMD features listed" in cpu_identity("", 2)


def test_this_host_is_identified_from_its_cpuinfo_and_the_cores_it_may_use() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this platform")
    assert host_cpu() == cpu_identity(cpuinfo.read_text(), available_cores())
