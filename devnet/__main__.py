"""The local VeriFrame network, from the command line.

    python -m devnet serve [--data DIR] [--backend-port 8000] [--ipfs-port 5001] [--gateway-port 8080]
                           [--access-ttl SECONDS] [--job-lease SECONDS] [--ipfs-api-auth VALUE]
    python -m devnet worker-key            # new Stark key pair, registered and verified; prints env lines
    python -m devnet submit FILE [--settings JSON] [--reward WEI]   # adds FILE to IPFS, creates a job
    python -m devnet jobs                  # status and result CID of every job

``serve`` prints the env lines a worker needs, then ``devnet ready``. The other commands talk to a running
``serve`` over HTTP, exactly as a creator's and an admin's tools would, and read the admin key from the
data folder. With ``--ipfs-api-auth`` (or ``DEVNET_IPFS_API_AUTH``, which keeps it off the command line)
the IPFS RPC API answers 401 to calls without that Authorization; the other commands then send
``IPFS_API_AUTH`` from the environment, as the worker does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from .keys import StarkKeyPair, load_keypair, new_keypair, sign

log = logging.getLogger("devnet")

DEFAULT_DATA = Path(".cache") / "devnet"


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data or os.environ.get("DEVNET_DATA") or DEFAULT_DATA).resolve()


def _seconds(text: str) -> float:
    """argparse type for a duration: a non-negative number of seconds."""
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text}")
    return value


def env_lines(host: str, backend_port: int, ipfs_port: int, gateway_port: int) -> list[str]:
    return [
        f"BACKEND_API_URL=http://{host}:{backend_port}/api/v1",
        f"IPFS_API=/ip4/{host}/tcp/{ipfs_port}",
        f"IPFS_GATEWAY=http://{host}:{gateway_port}/ipfs",
    ]


# -- serve ----------------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .backend import create_backend_app, ensure_admin
    from .ipfs_node import BlockStore, create_gateway_app, create_rpc_app

    data = _data_dir(args)
    data.mkdir(parents=True, exist_ok=True)
    admin = ensure_admin(data)
    store = BlockStore(data / "ipfs")
    apps = [
        (create_backend_app(data, access_ttl=args.access_ttl, job_lease=args.job_lease), args.backend_port),
        (create_rpc_app(store, required_auth=args.ipfs_api_auth), args.ipfs_port),
        (create_gateway_app(store), args.gateway_port),
    ]
    servers = [
        uvicorn.Server(uvicorn.Config(app, host=args.host, port=port, log_level="warning", access_log=False))
        for app, port in apps
    ]

    async def run_all() -> None:
        tasks = [asyncio.create_task(server.serve()) for server in servers]
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                for server in servers:
                    server.should_exit = True
                await asyncio.gather(*tasks, return_exceptions=True)
                raise SystemExit("devnet: a server failed to start (is the port in use?)")
            await asyncio.sleep(0.05)
        for line in env_lines(args.host, args.backend_port, args.ipfs_port, args.gateway_port):
            print(line)
        print(f"DEVNET_DATA={data}")
        print(f"DEVNET_ADMIN_ADDRESS={admin.address}")
        print("devnet ready", flush=True)
        await asyncio.gather(*tasks)

    asyncio.run(run_all())
    return 0


# -- clients --------------------------------------------------------------------------------------------
def _backend(args: argparse.Namespace) -> str:
    return (args.backend or os.environ.get("BACKEND_API_URL") or "http://127.0.0.1:8000/api/v1").rstrip("/")


def _ipfs_api(args: argparse.Namespace) -> str:
    from veriframe_addon.worker.multiaddr import api_url_from_multiaddr

    return api_url_from_multiaddr(args.ipfs_api or os.environ.get("IPFS_API") or "/ip4/127.0.0.1/tcp/5001")


def _call(method: str, url: str, **kwargs: Any) -> Any:
    response = requests.request(method, url, timeout=30, **kwargs)
    if response.status_code >= 400:
        raise SystemExit(f"devnet: {method} {url} -> HTTP {response.status_code}: {response.text[:300]}")
    return response.json() if response.content else None


def sign_in(backend: str, keys: StarkKeyPair) -> str:
    """Challenge, Stark signature, worker-auth: returns an access token for ``keys``."""
    challenge = _call("POST", f"{backend}/auth/challenge", json={"address": keys.address})
    body = _call(
        "POST",
        f"{backend}/auth/worker-auth",
        json={
            "address": keys.address,
            "message": challenge["message"],
            "signature": sign(challenge["message"], keys.private_key),
            "timestamp": int(challenge["timestamp"]),
        },
    )
    return body["access_token"]


def cmd_worker_key(args: argparse.Namespace) -> int:
    backend = _backend(args)
    admin = load_keypair(_data_dir(args) / "admin.json")
    keys = new_keypair()
    _call(
        "POST",
        f"{backend}/workers/register",
        json={"address": keys.address, "public_key": hex(keys.public_key)},
    )
    token = sign_in(backend, admin)
    _call("POST", f"{backend}/workers/{keys.address}/verify", headers={"Authorization": f"Bearer {token}"})
    print(f"WORKER_ADDRESS={keys.address}")
    print(f"WORKER_PRIVATE_KEY={hex(keys.private_key)}")
    return 0


def _ipfs_auth_headers() -> dict[str, str]:
    """The ``Authorization`` header for an RPC API that requires one (``IPFS_API_AUTH``, worker forms)."""
    from veriframe_addon.worker.config import parse_authorization

    value = os.environ.get("IPFS_API_AUTH", "").strip()
    return {"Authorization": parse_authorization(value, "IPFS_API_AUTH")} if value else {}


def add_file(ipfs_api: str, path: Path, cid_version: int = 0) -> str:
    with path.open("rb") as file:
        answer = _call(
            "POST",
            f"{ipfs_api}/api/v0/add",
            params={"cid-version": cid_version},
            files={"file": (path.name, file)},
            headers=_ipfs_auth_headers(),
        )
    return answer["Hash"]


def create_job(backend: str, creator: str, cid: str, *, reward: int, settings: str | None) -> dict[str, Any]:
    jobs = _call("GET", f"{backend}/jobs/", params={"limit": 1000})
    chain_id = max((job["chain_job_id"] for job in jobs), default=0) + 1
    return _call(
        "POST",
        f"{backend}/jobs/",
        json={
            "chain_job_id": chain_id,
            "creator_address": creator,
            "asset_cid_part1": cid[:31],
            "asset_cid_part2": cid[31:] or None,
            "reward_amount": reward,
            "deadline": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            "required_capabilities": settings,
        },
    )


def cmd_submit(args: argparse.Namespace) -> int:
    if args.settings is not None:
        json.loads(args.settings)  # fail here, not in a worker, on a typo
    admin = load_keypair(_data_dir(args) / "admin.json")
    cid = add_file(_ipfs_api(args), args.file, args.cid_version)
    job = create_job(_backend(args), admin.address, cid, reward=args.reward, settings=args.settings)
    log.info("job %s: %s (CID %s)", job["id"], args.file.name, cid)
    print(job["id"])
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    for job in _call("GET", f"{_backend(args)}/jobs/", params={"limit": 1000}):
        result = job["full_result_cid"] or "-"
        print(f"{job['id']}  {job['status']:<10} asset={job['full_asset_cid']}  result={result}")
    return 0


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devnet", description=__doc__.splitlines()[0])
    data_help = f"data folder (default $DEVNET_DATA or {DEFAULT_DATA})"
    parser.add_argument("--data", help=data_help)
    # Every command takes --data after its name too (``serve --data DIR``); SUPPRESS keeps a value given
    # before the command from being reset by the subcommand's own default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=argparse.SUPPRESS, help=data_help)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the backend, IPFS API and gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--backend-port", type=int, default=8000)
    serve.add_argument("--ipfs-port", type=int, default=5001)
    serve.add_argument("--gateway-port", type=int, default=8080)
    serve.add_argument(
        "--ipfs-api-auth",
        default=os.environ.get("DEVNET_IPFS_API_AUTH") or None,
        metavar="VALUE",
        help="require this Authorization on the IPFS RPC API: 'Bearer <token>', 'Basic <base64>' or "
        "'user:password' (default $DEVNET_IPFS_API_AUTH; none)",
    )
    serve.add_argument("--access-ttl", type=int, default=3600, help="access token lifetime in seconds")
    serve.add_argument(
        "--job-lease",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="reopen an assigned job its worker has not completed within SECONDS (default 0: never)",
    )
    serve.set_defaults(func=cmd_serve)

    for name, func, helptext in (
        ("worker-key", cmd_worker_key, "new worker key pair, registered and verified"),
        ("submit", cmd_submit, "add a file to IPFS and create a job for it"),
        ("jobs", cmd_jobs, "list jobs"),
    ):
        command = sub.add_parser(name, parents=[common], help=helptext)
        command.add_argument("--backend", help="backend API base (default $BACKEND_API_URL)")
        command.add_argument("--ipfs-api", help="IPFS API multiaddr or URL (default $IPFS_API)")
        command.set_defaults(func=func)
        if name == "submit":
            command.add_argument("file", type=Path)
            command.add_argument("--settings", help="render settings JSON, e.g. '{\"samples\": 4}'")
            command.add_argument("--reward", type=int, default=10**15)
            command.add_argument("--cid-version", type=int, choices=(0, 1), default=0)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
