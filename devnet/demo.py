"""The whole product on one machine: ``python3 build.py demo`` runs this in the project's venv.

Starts the local network, makes and registers a worker wallet, writes the sample scene with Blender,
submits it as a job, runs the headless worker until the job is completed, then fetches the result PNG
back from IPFS by the CID the backend recorded, checks it shows the scene, and verifies its signed
receipt. Exit 0 only if all of that held.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import requests

from .image_check import describe_sample_render
from .process import ROOT, port_is_free, running_devnet

log = logging.getLogger("devnet.demo")

DEFAULT_PORTS = (8000, 5001, 8080)
OUT = ROOT / "demo-output"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[demo] %(message)s")
    OUT.mkdir(exist_ok=True)
    work = OUT / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir()
    ports = DEFAULT_PORTS if all(port_is_free(p) for p in DEFAULT_PORTS) else None
    with running_devnet(work / "devnet", ports=ports) as net:
        log.info("local network up: %s", ", ".join(f"{k}={v}" for k, v in net.env.items()))
        worker_env = net.worker_env()
        log.info("worker wallet %s registered and verified", worker_env["WORKER_ADDRESS"])

        scene = work / "sample_scene.blend"
        subprocess.run(
            [sys.executable, "-m", "devnet.sample_scene", str(scene), "--size", "160x120", "--samples", "8"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        job_id = net.cli("submit", str(scene)).strip()
        log.info("submitted %s as job %s", scene.name, job_id)

        env = {**os.environ, **worker_env, "VERIFRAME_DATA_DIR": str(work / "worker"), "POLL_INTERVAL": "2"}
        env.pop("BLENDER_PATH", None)
        log.info("running the headless worker: python -m veriframe_addon --max-jobs 1")
        worker = subprocess.run(
            [sys.executable, "-m", "veriframe_addon", "--max-jobs", "1"], cwd=ROOT, env=env, timeout=900
        )
        if worker.returncode != 0:
            log.error("worker exited with %d", worker.returncode)
            return 1

        job = requests.get(f"{net.backend_url}/jobs/{job_id}", timeout=10).json()
        if job["status"] != "completed":
            log.error("job %s is %s, not completed", job_id, job["status"])
            return 1
        cid = job["full_result_cid"]
        png = OUT / "result.png"
        gateway = net.env["IPFS_GATEWAY"]
        response = requests.get(f"{gateway}/{cid}", timeout=30)
        response.raise_for_status()
        png.write_bytes(response.content)
        try:
            description = describe_sample_render(png)
        except AssertionError as exc:
            log.error("the result is not a render of the scene: %s", exc)
            return 1
        # Anyone can check the result: its receipt, signature and job, fetched again by CID.
        log.info("verifying the result: python -m veriframe_addon verify %s", cid)
        verifier_env = {k: v for k, v in env.items() if k not in ("WORKER_PRIVATE_KEY", "WORKER_ADDRESS")}
        verified = subprocess.run(
            [sys.executable, "-m", "veriframe_addon", "verify", cid],
            cwd=ROOT,
            env=verifier_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        print(verified.stdout, end="")
        if verified.returncode != 0:
            log.error("the result did not verify: %s", verified.stderr[-2000:])
            return 1
    print(f"Job {job_id} completed.")
    print(f"Result CID: {cid}")
    print(f"Rendered PNG (fetched from IPFS): {png}  [{description}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
