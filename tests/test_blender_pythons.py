"""Each test Blender's Python holds exactly the libraries that Blender release bundles, and the worker
does its network work under Blender 4.2 LTS's (the oldest: requests 2.27.1, urllib3 1.26.8).

The bpy wheels declare requests unpinned; without ``buildtools/bpy_matrix.py``'s pins their venvs would
hold today's releases, and a test could pass on a library feature no real Blender has.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path

import requests

from buildtools import bpy_matrix
from devnet.process import Devnet

from .conftest import faults_injected, faulty_network, run_worker, worker_env
from .test_addon_matrix import _python

PROBE = (
    "import importlib.metadata as m, json, sys\n"
    "print(json.dumps({name: m.version(name) for name in sys.argv[1:]}))\n"
)


def installed(python: str, names: list[str]) -> dict[str, str]:
    done = subprocess.run([python, "-c", PROBE, *names], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_blender_4_2_venv_has_blender_4_2s_requests_and_urllib3() -> None:
    """The numbers from Blender 4.2 LTS's versions.cmake, written out here rather than read from our pins."""
    assert installed(_python("4.2"), ["requests", "urllib3"]) == {"requests": "2.27.1", "urllib3": "1.26.8"}


def test_every_test_python_holds_its_blenders_bundled_versions() -> None:
    """4.2 and 5.0 in their venvs, and 4.5 in the main ``.venv`` (pinned by requirements-dev.txt)."""
    for release in ("4.2", "5.0"):
        wanted = bpy_matrix.BUNDLED[release]
        assert installed(_python(release), list(wanted)) == wanted, release
    main = {name: importlib.metadata.version(name) for name in bpy_matrix.BUNDLED["4.5"]}
    assert main == bpy_matrix.BUNDLED["4.5"], "requirements-dev.txt and BUNDLED['4.5'] disagree"


def test_worker_under_blender_4_2s_libraries_completes_jobs_through_a_faulty_network(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    """Sign-in, polling, claiming, download, upload and report with requests 2.27.1 / urllib3 1.26.8,
    through proxies that drop, delay, fail and cut a quarter of the backend and IPFS calls; the render
    is bpy 4.2's own (Cycles, one sample: no GL context to set up)."""
    settings = '{"engine": "CYCLES", "samples": 1, "resolution_percentage": 50}'
    ids = [devnet.cli("submit", str(sample_blend), "--settings", settings).strip() for _ in range(2)]
    with faulty_network(devnet, rate=0.25, seed=11) as (routes, proxies):
        env = worker_env(devnet, tmp_path / "worker", **routes, ASSET_CACHE_MB="0")  # scenes via the faults
        run = run_worker(env, "--max-jobs", "2", python=_python("4.2"), timeout=900)
        injected = sum(faults_injected(proxy) for proxy in proxies)
    assert run.returncode == 0, run.output
    assert "Blender found: Blender 4.2." in run.output, run.output
    assert injected > 0 and "; retry " in run.output, run.output
    for job_id in ids:
        job = requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()
        assert job["status"] == "completed", (job, run.output)
        png = requests.get(f"{devnet.env['IPFS_GATEWAY']}/{job['full_result_cid']}", timeout=10).content
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
