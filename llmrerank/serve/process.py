"""``llmrerank serve`` as a real process on a free port, for integration tests and load
benchmarks (this project's own use both): write the config, start the CLI, wait until
``/readyz`` answers, stop with SIGTERM (a graceful shutdown)."""

from __future__ import annotations

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
    (the JSON access log)."""

    def __init__(
        self,
        config: dict[str, Any] | None,
        workdir: Path,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        ready_timeout_s: float = 120.0,
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.workers = workers
        self.env = env or {}
        self.ready_timeout_s = ready_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        args = [
            sys.executable,
            "-c",
            "from llmrerank.cli import main; main()",
            "serve",
            "--port",
            str(self.port),
        ]
        if self.config is not None:
            config_path = self.workdir / f"service-{self.port}.yaml"
            config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
            args += ["--config", str(config_path)]
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), env.get("PYTHONPATH", "")])
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"llmrerank serve exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llmrerank serve was not ready in {self.ready_timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        self.terminate()
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
