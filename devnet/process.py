"""Starting ``python -m devnet serve`` as a real child process, for the demo and the tests.

The network runs in its own process, as it would on a real machine, so the worker under test reaches
it only over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("devnet")

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Devnet:
    """A running devnet: its env lines as a dict, its data folder, and its log.

    ``ipfs_api_auth`` is the Authorization its IPFS RPC API requires (None: none); ``cli`` sends it, and
    it is not in ``env`` or ``worker_env`` so that a test hands it to a worker on purpose.
    """

    def __init__(
        self,
        process: subprocess.Popen[str],
        env: dict[str, str],
        data: Path,
        ipfs_api_auth: str | None = None,
    ) -> None:
        self.process = process
        self.env = env
        self.data = data
        self.ipfs_api_auth = ipfs_api_auth
        self.log_lines: list[str] = []

    @property
    def backend_url(self) -> str:
        return self.env["BACKEND_API_URL"]

    def cli(self, *args: str, check: bool = True) -> str:
        """Runs ``python -m devnet ARGS`` against this network; returns its stdout."""
        env = dict(os.environ, **self.env)
        env.pop("IPFS_API_AUTH", None)
        if self.ipfs_api_auth:
            env["IPFS_API_AUTH"] = self.ipfs_api_auth
        done = subprocess.run(
            [sys.executable, "-m", "devnet", "--data", str(self.data), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"devnet {args[0]} failed: {done.stderr[-2000:]}")
        return done.stdout

    def worker_env(self) -> dict[str, str]:
        """A new registered, verified worker wallet plus the network's addresses."""
        lines = self.cli("worker-key").splitlines()
        keys = dict(line.split("=", 1) for line in lines if "=" in line)
        return {**self.env, **keys}


@contextmanager
def running_devnet(
    data: Path,
    *,
    ports: tuple[int, int, int] | None = None,
    extra_args: tuple[str, ...] = (),
    ipfs_api_auth: str | None = None,
) -> Iterator[Devnet]:
    """Starts a devnet on ``ports`` (backend, IPFS API, gateway; free ones by default) and stops it after.

    ``ipfs_api_auth`` makes its IPFS RPC API require that Authorization (passed in the environment, not
    on the command line, where other users of the machine could read it).
    """
    backend, ipfs, gateway = ports or (free_port(), free_port(), free_port())
    cmd = [
        sys.executable,
        "-m",
        "devnet",
        "serve",  # --data after the command: the form the devnet is documented with
        "--data",
        str(data),
        "--backend-port",
        str(backend),
        "--ipfs-port",
        str(ipfs),
        "--gateway-port",
        str(gateway),
        *extra_args,
    ]
    child_env = {k: v for k, v in os.environ.items() if k != "DEVNET_IPFS_API_AUTH"}
    if ipfs_api_auth:
        child_env["DEVNET_IPFS_API_AUTH"] = ipfs_api_auth
    process = subprocess.Popen(
        cmd, cwd=ROOT, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    env: dict[str, str] = {}
    deadline = time.monotonic() + READY_TIMEOUT
    seen: list[str] = []
    try:
        for line in process.stdout:
            seen.append(line.rstrip())
            if "=" in line and line.split("=", 1)[0].isupper():
                key, value = line.rstrip().split("=", 1)
                env[key] = value
            if line.strip() == "devnet ready":
                break
            if time.monotonic() > deadline:
                break
        if "BACKEND_API_URL" not in env:
            raise RuntimeError("devnet did not start:\n" + "\n".join(seen[-30:]))
        devnet = Devnet(
            process, {k: v for k, v in env.items() if not k.startswith("DEVNET_")}, data, ipfs_api_auth
        )
        devnet.log_lines = seen
        drain = threading.Thread(
            target=lambda: devnet.log_lines.extend(ln.rstrip() for ln in process.stdout), daemon=True
        )
        drain.start()
        yield devnet
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
