"""The Blender layer, driven inside the ``bpy`` module (Blender 4.5) in a child process per scenario."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from devnet.process import ROOT, Devnet

from .conftest import worker_env
from .servers import listening_socket, settings_pointing_at

PROBE = Path(__file__).resolve().parent / "addon_probe.py"


def probe(
    scenario: str,
    args: dict | None = None,
    env: dict | None = None,
    timeout: float = 300,
    python: str | Path = sys.executable,
) -> dict:
    """Runs one ``addon_probe.py`` scenario in ``python`` (another release's bpy venv, for the matrix)."""
    done = subprocess.run(
        [str(python), str(PROBE), scenario, json.dumps(args or {})],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("@@RESULT ")]
    assert lines, f"probe {scenario} gave no result:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(lines[-1][len("@@RESULT ") :])


def assert_register_cycle(result: dict) -> None:
    for round_ in (0, 1):
        registered = result[f"registered_{round_}"]
        assert registered["panel"] and all(registered["ops"])
        assert registered["start_poll"] and not registered["stop_poll"]
        assert registered["prefs"] == 10.0
        assert "_after_file_load" in registered["handlers"]
        unregistered = result[f"unregistered_{round_}"]
        assert not unregistered["panel"] and "_after_file_load" not in unregistered["handlers"]


def draw_states_args(tmp_path: Path) -> dict:
    png = tmp_path / "thumb.png"
    Image.new("RGB", (32, 24), "red").save(png)
    env = {
        "BACKEND_API_URL": "http://127.0.0.1:9/api/v1",
        "WORKER_ADDRESS": "0x1",
        "WORKER_PRIVATE_KEY": "0x2",
    }
    return {"env": env, "png": str(png)}


def assert_draw_states(drawn: dict[str, list[str]]) -> None:
    assert drawn["no worker"] == ["Stopped"]
    assert any("Allow Online Access is off" in text for text in drawn["offline"])
    assert drawn["downloading"][0] == "Downloading 42%" and drawn["rendering"][0] == "Rendering 42%"
    for state in ("signing-in", "polling", "claiming", "uploading", "reporting"):
        assert drawn[state][0] == state.replace("-", " ").capitalize()
        assert "Job 6f0c-job" in drawn[state] and "Done 3" in drawn[state]
    assert any("Not verified yet" in text for text in drawn["idle"])
    # Whether renders run in the OS sandbox is always on show, and without it, what still guards the node.
    assert "Renders sandboxed (bwrap)" in drawn["rendering"] and "Renders NOT sandboxed" in drawn["idle"]
    assert "Only the scene check guards this node" in drawn["idle"]
    assert "Only the scene check guards this node" not in drawn["rendering"]
    assert "In Blender 4.2.23 LTS on llvmpipe" in drawn["rendering"]  # which Blender renders the job
    assert not any(text.startswith("In Blender") for text in drawn["idle"])
    assert any("Cannot reach the VeriFrame backend" in text for text in drawn["polling"])
    assert any("Backend: reachable" in text for text in drawn["checks"])
    # Rewards in token units; the earnings from the history and the backend's own figures.
    assert "Earned 0.001 STRK" in drawn["idle"] and "Today 0.001 STRK" in drawn["idle"]
    assert "This week 0.002 STRK" in drawn["idle"] and "In all 0.005 STRK" in drawn["idle"]
    assert "Backend: 5 jobs, 0.005 STRK" in drawn["idle"] and "Reputation 3" in drawn["idle"]
    assert "Job job-new completed, result -" in " ".join(drawn["idle"])  # the selected row's details
    assert not any("wei" in text for state in drawn for text in drawn[state] if isinstance(text, str))
    assert "No new jobs: paused by the operator" in drawn["paused"]
    assert "No new jobs: outside the schedule until 18:00" in " ".join(drawn["sleeping"])  # wrapped
    assert "Resume" in drawn["paused calls"] and "Pause" in drawn["rendering calls"]
    assert "Never take jobs from this creator" in drawn["rendering calls"]
    assert "VERIFRAME_UL_history" in drawn["idle calls"]
    assert "Rendering 42%" in drawn["rendering calls"]  # the progress bar
    assert any("IPFS gateway: HTTP 404" in text for text in drawn["checks"])
    # Render slots: two lines per slot (state and job, then device), and no single "Job" line for both.
    slots = drawn["slots"]
    assert "2 render slots" in slots
    assert slots.index("1: Rendering 42%, job 6f0c-job") + 1 == slots.index("CUDA NVIDIA A (CUDA_0)")
    assert slots.index("2: Idle") + 1 == slots.index("CUDA NVIDIA B (CUDA_1)")
    assert "Job 6f0c-job" not in slots
    assert "Delivering job a1b2c3d4's result" in slots  # a result on its way beside the next render
    assert not any("Delivering" in text for text in drawn["rendering"])


def test_registers_and_unregisters_cleanly_twice() -> None:
    assert_register_cycle(probe("register-cycle"))


def test_panel_draws_every_state(tmp_path: Path) -> None:
    result = probe("draw-states", draw_states_args(tmp_path))
    assert_draw_states(result["drawn"])
    (new_text, new_failed, new_thumb), (old_text, old_failed, _) = result["history_rows"]
    assert new_text.endswith("0.001 STRK") and not new_failed and new_thumb.endswith("thumb.png")
    assert old_text.endswith("failed") and old_failed


def test_render_blender_list_edits_persists_and_becomes_blender_path(tmp_path: Path) -> None:
    """The preferences' Blender list is what the worker renders with, joined as BLENDER_PATH joins it."""
    first, second = tmp_path / "blender-4.2" / "blender", tmp_path / "bpy-5.0" / "bin" / "python"
    user = tmp_path / "blender-user"
    (user / "config").mkdir(parents=True)  # Blender honours BLENDER_USER_CONFIG only if it exists
    env = draw_states_args(tmp_path)["env"]
    probe_env = {
        **{k: v for k, v in os.environ.items() if k != "BLENDER_PATH"},
        "BLENDER_USER_RESOURCES": str(user),
        "BLENDER_USER_CONFIG": str(user / "config"),
    }
    args = {"env": env, "paths": [str(first), str(second)]}
    written = probe("blender-list", {**args, "phase": "write"}, env=probe_env)

    assert written["empty_remove_poll"] is False  # nothing to remove yet
    assert written["add_outcomes"] == [["FINISHED"], ["FINISHED"], ["CANCELLED"]]  # the same path twice: once
    assert written["after_add"][:2] == [str(first), str(second)] and len(written["after_add"]) == 3
    assert written["add_running"] == ["FINISHED"] and written["after_add"][2] == sys.executable  # bpy module
    assert written["remove"] == ["FINISHED"]
    assert written["listed"] == [str(first), str(second)]
    assert written["blender_path"] == os.pathsep.join([str(first), str(second)])
    assert written["row_calls"] == ["prop"]

    assert (user / "config" / "userpref.blend").is_file()
    reread = probe("blender-list", {**args, "phase": "read"}, env=probe_env)  # a new Blender, same user
    assert reread["listed"] == [str(first), str(second)]
    assert reread["blender_path"] == written["blender_path"]


def test_with_online_access_off_start_explains_and_nothing_connects(tmp_path: Path) -> None:
    """Blender's extension rule: no network request while ``bpy.app.online_access`` is off."""
    with listening_socket() as (port, connections):
        env = settings_pointing_at(port, tmp_path / "worker")
        result = probe("offline-start", {"env": env})
        assert result["online_access"] is False
        for name in ("start", "check_setup"):
            assert "Allow Online Access is off" in result[name], result[name]
        assert not result["worker"] and not result["checks_running"]
        assert any("Allow Online Access is off" in text for text in result["panel"])
        assert connections == [], "a request was made with online access off"


def test_pause_and_resume_from_the_panel_mid_job(devnet: Devnet, sample_blend: Path, tmp_path: Path) -> None:
    """The panel's Pause while a job renders: that job finishes, the next waits, the backend shows the
    worker inactive; Resume: the next job runs and the worker is active again."""
    first, second = (
        devnet.cli("submit", str(sample_blend), "--settings", '{"engine": "WORKBENCH"}').strip() for _ in "ab"
    )
    env = worker_env(devnet, tmp_path / "worker")
    result = probe(
        "pause-from-panel", {"env": env}, env={**env, "BLENDER_USER_RESOURCES": str(tmp_path / "u")}
    )

    assert result["phase"] == "done", result
    assert result["pause"] == ["FINISHED"] and result["resume"] == ["FINISHED"]
    assert result["completed_when_paused"] == 1 and result["active_when_paused"] is False
    assert "paused by the operator" in result["held"]
    assert result["active_after"] is True
    log = "\n".join(result["log"])
    assert log.index(f"Successfully completed job {first}") < log.index("No new jobs: paused")
    assert log.index("Taking jobs again") < log.index(f"Successfully claimed job {second}")


def test_start_operator_runs_a_job_and_the_key_stays_out_of_userprefs(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    """The whole GUI path minus the window: operator -> thread -> queue -> timer tick -> panel."""
    job_id = devnet.cli("submit", str(sample_blend)).strip()
    env = worker_env(devnet, tmp_path / "worker")
    key = env.pop("WORKER_PRIVATE_KEY")
    user = tmp_path / "blender-user"
    probe_env = {**env, "BLENDER_USER_RESOURCES": str(user), "BLENDER_USER_CONFIG": str(user / "config")}
    result = probe("run-job", {"env": env, "key": key, "open_file": str(sample_blend)}, env=probe_env)

    assert result["completed"] == 1
    assert {"downloading", "rendering"} <= set(result["states"]) or "rendering" in result["states"]
    assert any(f"Successfully completed job {job_id}" in line for line in result["log"])
    assert result["reopened_mid_job"]  # a file was opened while the job rendered, and the job still completed
    assert not any(key in line or key[2:] in line for line in result["log"])
    print(
        f"timer tick: max {result['tick_max_ms']:.2f} ms over {result['ticks']} ticks; "
        f"panel draw max {result['draw_max_ms']:.2f} ms"
    )
    assert not result["running_after_disable"]
    userpref = Path(result["userpref"])
    data = userpref.read_bytes()
    assert env["WORKER_ADDRESS"].encode() in data  # the preferences were saved...
    assert key.encode() not in data and key[2:].encode() not in data  # ...without the key


def test_disabling_the_addon_mid_render_stops_the_worker_and_kills_blender(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    job_id = devnet.cli("submit", str(sample_blend), "--settings", '{"samples": 256}').strip()
    env = worker_env(devnet, tmp_path / "worker")
    result = probe("disable-while-rendering", {"env": env})
    assert result["children_while_rendering"], "the render child was never seen"
    assert not result["thread_alive"] and result["children_after"] == []
    assert result["completed"] == 0
    journal = (
        json.loads((tmp_path / "worker" / "completed_jobs.json").read_text())
        if (tmp_path / "worker" / "completed_jobs.json").exists()
        else {"completed_jobs": []}
    )
    assert job_id not in journal["completed_jobs"]
