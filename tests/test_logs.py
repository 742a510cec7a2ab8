"""Log lines: text unchanged, JSON with job context, a rotating file in the data folder, secrets masked.

These drive the real handlers (stderr and files in ``tmp_path``); the worker run that writes JSON from a
real job is in ``test_monitoring.py``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devnet.process import free_port
from veriframe_addon.worker.config import load_config
from veriframe_addon.worker.observe import telemetry
from veriframe_addon.worker.observe.logs import (
    REDACTED,
    configure_from_config,
    configure_logging,
    secret_values,
)
from veriframe_addon.worker.observe.metrics import WorkerMetrics
from veriframe_addon.worker.runner import BackgroundWorker

log = logging.getLogger("veriframe.worker")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KEY = "0x0" + "7c1f" * 15 + "abc"  # 64 hex digits, a leading zero
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ3b3JrZXIifQ.c2lnbmF0dXJlLXNlY3JldC12YWx1ZQ"
BASIC_USER, BASIC_PASSWORD = "render", "hunter2-very-secret"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers; put back pytest's own afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_text_lines_keep_the_worker_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    log.info("[Worker] Successfully claimed job %s", "job-7")
    with telemetry.stage("job-7", "render", WorkerMetrics()):
        log.debug("[Worker] not shown at INFO")
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO    \[Worker\] Successfully claimed job job-7", lines[0])
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d INFO    \[Worker\] Stage render of job job-7 took \d+\.\d\d s", lines[1]
    )
    assert len(lines) == 2


def test_json_lines_carry_time_level_logger_message_and_the_job_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metrics = WorkerMetrics()
    configure_logging("DEBUG", "json")
    log.info("[Worker] Polling for jobs...")
    with telemetry.stage("job-1", "download", metrics):
        logging.getLogger("veriframe.worker.deep").warning("[Worker] gateway slow")
    with pytest.raises(RuntimeError), telemetry.stage("job-1", "render", metrics):
        raise RuntimeError("Blender crashed")
    try:
        raise ValueError("bad bytes")
    except ValueError:
        log.exception("[Worker] ✗ Job %s failed", "job-1", extra={"job_id": "job-1"})

    polled, slow, took, stopped, failed = _json_lines(capsys.readouterr().err)
    for line in (polled, slow, took, stopped, failed):
        assert ISO_UTC.match(line["time"]) and {"level", "logger", "message"} <= set(line)
    assert polled == {**polled, "level": "INFO", "logger": "veriframe.worker"}
    assert "job_id" not in polled and "stage" not in polled  # outside any job
    assert (slow["job_id"], slow["stage"], slow["logger"]) == ("job-1", "download", "veriframe.worker.deep")
    assert took["message"].startswith("[Worker] Stage download of job job-1 took ")
    assert (took["job_id"], took["stage"]) == ("job-1", "download") and took["duration"] >= 0
    assert (stopped["stage"], "stopped after" in stopped["message"]) == ("render", True)
    assert failed["message"] == "[Worker] ✗ Job job-1 failed" and failed["job_id"] == "job-1"
    assert "stage" not in failed and "ValueError: bad bytes" in failed["exception"]
    # Only a stage that finished counts towards the stage timings.
    counts = [metrics.value("veriframe_stage_seconds_count", stage=stage) for stage in ("download", "render")]
    assert counts == [1, 0]


def test_the_log_file_rotates_at_its_size_and_keeps_count_old_files(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "worker.log"
    configure_logging("INFO", "json", log_file=path, max_bytes=2000, backup_count=2)
    for number in range(200):
        log.info("[Worker] line %03d %s", number, "x" * 40)
    logging.getLogger().handlers[1].flush()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["worker.log", "worker.log.1", "worker.log.2"]
    for name in files:
        content = (path.parent / name).read_text()
        assert len(content.encode()) <= 2000
        assert all(line["message"].startswith("[Worker] line ") for line in _json_lines(content))
    assert '"[Worker] line 199 ' in path.read_text()  # the newest line is in the current file


def test_the_log_file_goes_to_the_data_folder_and_can_be_turned_off(tmp_path: Path) -> None:
    env = {
        "BACKEND_API_URL": "http://127.0.0.1:9",
        "WORKER_ADDRESS": "0x1234",
        "WORKER_PRIVATE_KEY": KEY,
        "VERIFRAME_DATA_DIR": str(tmp_path / "data"),
    }
    config = load_config(environ=env)
    assert configure_from_config(config) is not None
    log.info("[Worker] Starting VeriFrame Worker (API-based)")
    logging.getLogger().handlers[1].flush()
    written = (tmp_path / "data" / "logs" / "worker.log").read_text()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO    \[Worker\] Starting VeriFrame Worker \(API-based\)\n",
        written,
    )
    assert configure_from_config(load_config(environ={**env, "LOG_FILE": "off"})) is None
    assert len(logging.getLogger().handlers) == 1


def test_an_unwritable_log_file_is_a_warning_not_a_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    assert configure_logging("INFO", "text", log_file=blocker / "worker.log") is None
    log.info("[Worker] still logging")
    err = capsys.readouterr().err
    assert "Cannot write the log file" in err and "[Worker] still logging" in err


def test_secrets_are_masked_in_every_spelling_and_every_sink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    basic = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    env = {
        "BACKEND_API_URL": "http://127.0.0.1:9",
        "WORKER_ADDRESS": "0x1234",
        "WORKER_PRIVATE_KEY": KEY,
        "VERIFRAME_DATA_DIR": str(tmp_path / "data"),
        "IPFS_API_AUTH": f"{BASIC_USER}:{BASIC_PASSWORD}",
        "PINATA_JWT": JWT,
        "LOG_FORMAT": "json",
    }
    config = load_config(environ=env)
    configure_logging(
        "INFO",
        "json",
        log_file=tmp_path / "worker.log",
        secrets=secret_values(config, env),
    )
    key_number = int(KEY, 16)
    spellings = [
        KEY,
        KEY.upper().replace("0X", "0x"),
        KEY[2:],
        format(key_number, "x"),
        str(key_number),
        f"Basic {basic}",
        basic,
        BASIC_PASSWORD,
        f"Authorization: Bearer {JWT}",
    ]
    for spelling in spellings:
        log.warning("[Worker] a careless line: %s", spelling)
    log.info(f"[Worker] a careless message with {KEY[2:]} inline")  # noqa: G004 - the point of the test
    try:
        raise RuntimeError(f"request failed with header Basic {basic}")
    except RuntimeError:
        log.exception("[Worker] careless traceback")
    logging.getLogger().handlers[1].flush()

    for sink in (capsys.readouterr().err, (tmp_path / "worker.log").read_text()):
        lines = _json_lines(sink)
        assert len(lines) == len(spellings) + 2
        assert all(REDACTED in json.dumps(line) for line in lines)
        lowered = sink.lower()
        for secret in (KEY[2:], format(key_number, "x"), str(key_number), basic, BASIC_PASSWORD, JWT):
            assert secret.lower() not in lowered, secret


def test_the_extensions_worker_thread_writes_the_same_log_file(tmp_path: Path) -> None:
    """Inside Blender the worker runs in ``BackgroundWorker``'s thread; it writes DATA/logs/worker.log too."""
    env = {
        "BACKEND_API_URL": f"http://127.0.0.1:{free_port()}/api/v1",  # nobody there: it logs and waits
        "WORKER_ADDRESS": "0x1234",
        "WORKER_PRIVATE_KEY": KEY,
        "VERIFRAME_DATA_DIR": str(tmp_path / "data"),
        "RENDER_SANDBOX": "off",
        "LOG_FORMAT": "json",
    }
    worker_logger = logging.getLogger("veriframe.worker")
    handlers, level = worker_logger.handlers[:], worker_logger.level
    worker = BackgroundWorker(load_config(environ=env))
    log_file = tmp_path / "data" / "logs" / "worker.log"
    try:
        worker.start()
        deadline = time.monotonic() + 60
        while "Waiting for the backend" not in (log_file.read_text() if log_file.exists() else ""):
            assert time.monotonic() < deadline, "the worker thread never logged its wait"
            time.sleep(0.1)
    finally:
        worker.request_stop(now=True)
        assert worker.join(60)
        worker_logger.setLevel(level)
    worker.drain()

    written = _json_lines(log_file.read_text())
    assert written[0]["message"] == "[Worker] Starting VeriFrame Worker (API-based)"
    assert any(line["message"].startswith("[Worker] Waiting for the backend") for line in written)
    assert any("Waiting for the backend" in line.text for line in worker.log_lines)  # the panel's copy
    assert KEY[2:] not in log_file.read_text()
    assert worker_logger.handlers == handlers  # both handlers are gone with the thread
