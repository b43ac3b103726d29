"""``llmrerank serve`` as a real process on a free port, for integration tests and load
benchmarks (this project's own use both): write the config, start the CLI, wait until
``/readyz`` answers, stop with SIGTERM (a graceful shutdown), then SIGKILL whatever is
left of its process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = ["ServiceProcess", "free_port"]

# the checkout this module runs from goes first on the child's path
_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServiceProcess:
    """``with ServiceProcess(config, tmp_path) as service:`` then ``service.url``.
    ``config=None`` serves the offline default; ``log_path`` receives the process's stderr
    (uvicorn's log and the JSON access log), ``stdout_path`` its stdout.

    The service runs in a process group of its own, so stopping it also stops what it
    started (workers, llama.cpp servers), and it is stopped on every way out of ``start()``
    or the ``with`` block: a readiness timeout, an early exit, an error, an interrupt.
    ``launch()`` alone starts it without waiting, for a service expected to fail."""

    def __init__(
        self,
        config: dict[str, Any] | None,
        workdir: Path,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        ready_timeout_s: float = 120.0,
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.workers = workers
        self.env = env or {}
        self.args = args
        self.ready_timeout_s = ready_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"serve-{self.port}.log"
        self.stdout_path = workdir / f"serve-{self.port}.out"
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> ServiceProcess:
        args = [
            sys.executable,
            "-c",
            "from llmrerank.cli import main; main()",
            "serve",
            "--port",
            str(self.port),
            *self.args,
        ]
        if self.config is not None:
            config_path = self.workdir / f"service-{self.port}.yaml"
            config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
            args += ["--config", str(config_path)]
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), env.get("PYTHONPATH", "")])
        with self.log_path.open("wb") as log, self.stdout_path.open("wb") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=log, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        return self

    def start(self) -> ServiceProcess:
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop(grace_s=5.0)  # nothing is in flight yet: no need to wait long
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"llmrerank serve exited early (code {self.process.returncode}):\n{self.log()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llmrerank serve was not ready in {self.ready_timeout_s}s:\n{self.log()}")

    def wait_exit(self, timeout_s: float) -> int:
        """The exit code, once the process has ended; ``subprocess.TimeoutExpired`` if it
        still runs after ``timeout_s`` (it is left running: ``stop()`` ends it)."""
        if self.process is None:
            raise RuntimeError("the service was never launched")
        return self.process.wait(timeout=timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, grace_s: float = 60.0) -> int | None:
        """SIGTERM (a graceful shutdown), SIGKILL to the whole group after ``grace_s``; then
        whatever is left of the group (a server its process no longer watches) is killed."""
        if self.process is None:
            return None
        self.terminate()
        try:
            code = self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._kill_group()
            code = self.process.wait()
        finally:
            self._kill_group()
        return code

    def _kill_group(self) -> None:
        if self.process is None:
            return
        # the group keeps the leader's pid as its id even after the leader has exited
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
