"""The finisher: a slot's last result on its way while the slot goes on (``worker/finisher.py``).

The real seal, upload and report beside a real next render are in ``test_worker_resume`` (the next job
renders while a proxy holds the last report; a SIGKILL then loses neither job). Here the finishing step
is a function the test holds and lets go, to pin down what the slot depends on: one job at a time, in
order, ``done`` always called once, an error reaching the slot, and the operator seeing the delivery
over ``/health`` (a real status server on 127.0.0.1).
"""

from __future__ import annotations

import threading

import pytest
import requests

from veriframe_addon.worker.backend.api import Job
from veriframe_addon.worker.errors import IpfsCredentialsRefused
from veriframe_addon.worker.finisher import Finisher
from veriframe_addon.worker.state.job_records import JobState
from veriframe_addon.worker.status import StatusBoard

from .servers import served_status


def _job(name: str) -> tuple[Job, JobState]:
    job = Job(id=name, asset_cid="Qm", reward=0, status="assigned", required_capabilities=None, raw={})
    return job, JobState(job_id=name, stage="rendered", asset_cid="Qm")


class HeldFinish:
    """A finishing step that waits until the test lets it go; records the order jobs came in."""

    def __init__(self, raises: BaseException | None = None) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.order: list[str] = []
        self.raises = raises

    def __call__(self, job: Job, state: JobState) -> bool:
        self.order.append(job.id)
        self.started.set()
        assert self.release.wait(30)
        if self.raises is not None:
            raise self.raises
        return True


def test_a_result_on_its_way_is_shown_and_its_end_lets_the_job_go() -> None:
    with served_status() as (board, url):
        board.publish(state="rendering", job_id="job-b", progress=0.5)
        finish, ends = HeldFinish(), []
        finisher = Finisher(finish, board)
        finisher.hand(*_job("job-a"), ends.append)
        assert finish.started.wait(10)
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["delivering"] == ["job-a"] and health["current_job"]["id"] == "job-b"
        assert finisher.busy and ends == []
        finish.release.set()
        finisher.wait()
        assert ends == [True] and not finisher.busy
        assert requests.get(f"{url}/health", timeout=5).json()["delivering"] == []


def test_the_next_job_is_handed_over_only_once_the_one_before_is_finished() -> None:
    board = StatusBoard()
    finish, ends = HeldFinish(), []
    finisher = Finisher(finish, board)
    finisher.hand(*_job("job-a"), lambda ok: ends.append(("job-a", ok)))
    assert finish.started.wait(10)
    second = threading.Thread(
        target=finisher.hand, args=(*_job("job-b"), lambda ok: ends.append(("job-b", ok)))
    )
    second.start()
    second.join(0.5)
    assert second.is_alive() and finish.order == ["job-a"]  # job-b waits for job-a's delivery
    finish.release.set()
    second.join(10)
    finisher.wait()
    assert finish.order == ["job-a", "job-b"] and ends == [("job-a", True), ("job-b", True)]


def test_what_finishing_raised_reaches_the_slot_once_and_done_is_still_called() -> None:
    board = StatusBoard()
    finish, ends = (
        HeldFinish(IpfsCredentialsRefused("the IPFS API refused the credentials", "IPFS_API_AUTH")),
        [],
    )
    finisher = Finisher(finish, board)
    finisher.hand(*_job("job-a"), ends.append)
    finisher.check()  # still on its way: nothing to raise yet, and no wait
    assert finisher.busy
    finish.release.set()
    with pytest.raises(IpfsCredentialsRefused, match="refused the credentials"):
        finisher.wait()
    assert ends == [False] and board.current.delivering == ()
    finisher.wait()  # raised once: the slot has it
