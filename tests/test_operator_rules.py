"""The operator's rules as plain arithmetic: token amounts, job filters, the schedule's windows (midnight,
daylight saving), the pause flag's owner check, and the encrypted keystore against public test vectors.

The clock is injected only here, for the window arithmetic; the end-to-end tests use real time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from veriframe_addon.worker.config import load_config
from veriframe_addon.worker.errors import ConfigError
from veriframe_addon.worker.keystore import KeystoreError, decrypt_keystore, encrypt_keystore, read_keystore
from veriframe_addon.worker.policy.job_filters import JobFilters, parse_creators, parse_engines
from veriframe_addon.worker.policy.schedule import parse_schedule
from veriframe_addon.worker.policy.tokens import Token
from veriframe_addon.worker.render.machine_load import CpuLoad
from veriframe_addon.worker.state.pause_flag import PauseFlag

BERLIN = ZoneInfo("Europe/Berlin")  # DST: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00
ROOT = Path(__file__).resolve().parent.parent


def berlin(text: str, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN, fold=fold)


# -- token amounts ------------------------------------------------------------------------------------
def test_rewards_read_in_whole_tokens() -> None:
    strk = Token()
    assert strk.format(10**15) == "0.001 STRK"
    assert strk.format(0) == "0 STRK"
    assert strk.format(25 * 10**17) == "2.5 STRK"
    assert strk.format(1) == "< 0.000001 STRK"  # never shown as a misleading zero
    assert Token("ETH", 6).format(1_500_000) == "1.5 ETH"
    assert strk.parse("0.001", "MIN_REWARD") == 10**15
    assert strk.parse("2 STRK", "MIN_REWARD") == 2 * 10**18
    for bad in ("abc", "-1", "1e-19", "nan"):
        with pytest.raises(ConfigError, match="MIN_REWARD"):
            strk.parse(bad, "MIN_REWARD")


# -- job filters --------------------------------------------------------------------------------------
def test_filters_name_their_reason_and_block_any_spelling_of_an_address() -> None:
    filters = JobFilters(min_reward=10**15, engines=parse_engines("eevee, workbench"))
    assert filters.refusal(reward=10**15, engine="EEVEE", creator="0x1") is None
    assert "below MIN_REWARD 0.001 STRK" in filters.refusal(reward=10**14, engine="EEVEE", creator=None)
    assert "CYCLES" in filters.refusal(reward=10**16, engine="CYCLES", creator=None)
    blocked = filters.blocking("0x00AB")
    assert filters.refusal(reward=10**16, engine="EEVEE", creator="0xab") is None  # the original is unchanged
    assert "blocked" in blocked.refusal(reward=10**16, engine="EEVEE", creator="0x" + "0" * 62 + "ab")
    assert parse_engines("all") is None and parse_creators("0x1, 0x01") == {"0x" + "0" * 63 + "1"}
    with pytest.raises(ConfigError, match="'EVEE' is not an engine"):
        parse_engines("EVEE")
    with pytest.raises(ConfigError, match="BLOCKED_CREATORS"):
        parse_creators("alice")


def test_a_blocklist_file_adds_to_the_setting(tmp_path: Path) -> None:
    listed = tmp_path / "blocked_creators.txt"
    listed.write_text("0x2\nnot an address\n\n0x3\n")
    filters = JobFilters(blocked_creators=parse_creators("0x1")).with_blocklist(listed)
    assert len(filters.blocked_creators) == 3
    assert JobFilters().with_blocklist(tmp_path / "absent.txt") == JobFilters()


# -- the schedule -------------------------------------------------------------------------------------
def test_window_across_midnight_opens_evenings_and_closes_mornings() -> None:
    schedule = parse_schedule("mon-fri 18:00-08:00, sat-sun 00:00-24:00")
    assert schedule is not None
    # 2026-12-01 is a Tuesday.
    assert not schedule.is_open(berlin("2026-12-01T12:00"), BERLIN)
    assert schedule.next_change(berlin("2026-12-01T12:00"), BERLIN) == berlin("2026-12-01T18:00")
    assert schedule.is_open(berlin("2026-12-01T23:59"), BERLIN)
    assert schedule.is_open(berlin("2026-12-02T07:59"), BERLIN)  # Tuesday's window, on Wednesday
    assert not schedule.is_open(berlin("2026-12-02T08:00"), BERLIN)  # the end is not in the window
    # Friday evening runs into the weekend, which ends at Monday 00:00 (Sunday starts no night window):
    # windows that touch are one stretch, one change.
    assert schedule.next_change(berlin("2026-12-04T19:00"), BERLIN) == berlin("2026-12-07T00:00")
    assert schedule.is_open(berlin("2026-12-06T23:30"), BERLIN)


def test_day_lists_ranges_that_wrap_and_every_day() -> None:
    weekend = parse_schedule("fri-mon 09:00-10:00")
    assert weekend is not None and {w for w in weekend.windows[0].days} == {4, 5, 6, 0}
    listed = parse_schedule("mon+wed 09:00-10:00")
    assert listed is not None and listed.windows[0].days == frozenset({0, 2})
    daily = parse_schedule("22:00-06:00")
    assert daily is not None and daily.is_open(berlin("2026-12-03T05:00"), BERLIN)
    assert parse_schedule("always") is None and parse_schedule("") is None


def test_daylight_saving_keeps_wall_clock_times() -> None:
    early = parse_schedule("sun 02:30-04:00")
    night = parse_schedule("20:00-07:00")
    assert early is not None and night is not None
    # Spring forward: 02:30 does not exist on 2026-03-29; the window opens at the first minute that does.
    opens = early.next_change(berlin("2026-03-29T00:00"), BERLIN)
    assert opens.astimezone(UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert early.is_open(berlin("2026-03-29T03:30"), BERLIN)
    # A night window ends at 07:00 on the clock: 10 hours of real time that night, not 11.
    evening = berlin("2026-03-28T20:00")
    end = night.next_change(evening, BERLIN)
    assert night.is_open(evening, BERLIN) and end == berlin("2026-03-29T07:00")
    assert (end.astimezone(UTC) - evening.astimezone(UTC)).total_seconds() == 10 * 3600
    # Fall back: 02:30 happens twice on 2026-10-25; the window opens the first time (CEST, 00:30 UTC)
    # and, by the clock, is still open the second time round.
    first = early.next_change(berlin("2026-10-25T01:00"), BERLIN)
    assert first.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert early.is_open(berlin("2026-10-25T02:45", fold=1), BERLIN)
    assert not early.is_open(berlin("2026-10-25T04:30"), BERLIN)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("mon-fry 18:00-08:00", "'mon-fry' in 'mon-fry 18:00-08:00' is not a day"),
        ("mon 18:00", "'18:00' in 'mon 18:00'"),
        ("mon 25:00-26:00", "'25:00' in 'mon 25:00-26:00'"),
        ("mon 9-17", "'9' in 'mon 9-17'"),
        ("mon 10:00-10:00", "'mon 10:00-10:00' starts and ends at the same time"),
        ("mon-fri 18:00-08:00, sat sun 10:00-11:00", "'sat sun 10:00-11:00'"),
        ("mon 24:00-01:00", "starts at 24:00"),
    ],
)
def test_a_malformed_schedule_is_one_error_naming_the_bad_part(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_schedule(text)
    assert caught.value.variable == "SCHEDULE" and named in str(caught.value)


# -- the pause flag -----------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to chown the flag")
def test_a_pause_flag_of_another_user_is_ignored_and_others_cannot_set_one(tmp_path: Path) -> None:
    flag = PauseFlag(tmp_path)
    flag.set()
    assert flag.is_set() and (os.stat(flag.folder).st_mode & 0o777) == 0o700
    os.chown(flag.path, 65534, 65534)  # as if another user had planted it
    assert not flag.is_set()
    flag.clear()
    # Another local user (nobody) cannot reach the control folder at all.
    as_nobody = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            f"open({str(flag.path)!r}, 'w')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert as_nobody.returncode != 0 and "Permission denied" in as_nobody.stderr
    assert not flag.path.exists()


# -- the keystore -------------------------------------------------------------------------------------
# The Web3 Secret Storage definition's two published test vectors (password "testpassword").
VECTOR_KEY = 0x7A28B5BA57C53603B0B07B56BBA752F7784BF506FA95EDC395F5CF6C7514FE9D
PBKDF2_VECTOR = {
    "crypto": {
        "cipher": "aes-128-ctr",
        "cipherparams": {"iv": "6087dab2f9fdbbfaddc31a909735c1e6"},
        "ciphertext": "5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46",
        "kdf": "pbkdf2",
        "kdfparams": {
            "c": 262144,
            "dklen": 32,
            "prf": "hmac-sha256",
            "salt": "ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd",
        },
        "mac": "517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2",
    },
    "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
    "version": 3,
}
SCRYPT_VECTOR = {
    "crypto": {
        "cipher": "aes-128-ctr",
        "cipherparams": {"iv": "83dbcc02d8ccb40e466191a123791e0e"},
        "ciphertext": "d172bf743a674da9cdad04534d56926ef8358534d458fffccd4e6ad2fbde479c",
        "kdf": "scrypt",
        "kdfparams": {
            "dklen": 32,
            "n": 262144,
            "p": 8,
            "r": 1,
            "salt": "ab0c7876052600dd703518d6fc3fe8984592145b591fc8fb5c6d43190334ba19",
        },
        "mac": "2103ac29920d71da29f15d75b4a16dbe95cfd7ff8faea1056c33131d846e3097",
    },
    "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
    "version": 3,
}


@pytest.mark.parametrize("vector", [PBKDF2_VECTOR, SCRYPT_VECTOR], ids=["pbkdf2", "scrypt"])
def test_the_published_vectors_decrypt(vector: dict) -> None:
    assert decrypt_keystore(vector, "testpassword") == VECTOR_KEY
    with pytest.raises(KeystoreError, match="wrong password") as caught:
        decrypt_keystore(vector, "testpassword!")
    assert "testpassword" not in str(caught.value)


def test_damaged_or_foreign_keystores_say_what_is_wrong(tmp_path: Path) -> None:
    tampered = json.loads(json.dumps(PBKDF2_VECTOR))
    tampered["crypto"]["ciphertext"] = "00" + tampered["crypto"]["ciphertext"][2:]
    with pytest.raises(KeystoreError, match="MAC does not match"):
        decrypt_keystore(tampered, "testpassword")
    with pytest.raises(KeystoreError, match="not a version 3 keystore"):
        decrypt_keystore({"version": 1}, "x")
    other = json.loads(json.dumps(PBKDF2_VECTOR))
    other["crypto"]["cipher"] = "aes-256-gcm"
    with pytest.raises(KeystoreError, match="aes-256-gcm"):
        decrypt_keystore(other, "x")
    with pytest.raises(KeystoreError, match="no keystore at"):
        read_keystore(tmp_path / "absent.json", "x")


def test_a_keystore_made_here_with_starklis_parameters_configures_the_worker(tmp_path: Path) -> None:
    key = 0x1234ABCD
    document = encrypt_keystore(key, "correct horse")
    params = document["crypto"]["kdfparams"]
    assert (document["crypto"]["kdf"], params["n"], params["r"], params["p"]) == ("scrypt", 8192, 8, 1)
    path = tmp_path / "keystore.json"
    path.write_text(json.dumps(document))
    password_file = tmp_path / "password"
    password_file.write_text("correct horse\n")
    base = {"BACKEND_API_URL": "http://127.0.0.1:9", "WORKER_ADDRESS": "0x1", "WORKER_KEYSTORE": str(path)}
    assert load_config(environ={**base, "WORKER_KEYSTORE_PASSWORD": "correct horse"}).private_key == key
    assert (
        load_config(environ={**base, "WORKER_KEYSTORE_PASSWORD_FILE": str(password_file)}).private_key == key
    )
    with pytest.raises(ConfigError, match="wrong password"):
        load_config(environ={**base, "WORKER_KEYSTORE_PASSWORD": "wrong"})
    with pytest.raises(ConfigError, match="needs its password"):
        load_config(environ=base)
    with pytest.raises(ConfigError, match="both set"):
        load_config(environ={**base, "WORKER_KEYSTORE_PASSWORD": "x", "WORKER_PRIVATE_KEY": "0x2"})
    assert str(key) not in repr(load_config(environ={**base, "WORKER_KEYSTORE_PASSWORD": "correct horse"}))


def test_the_extension_opens_the_chosen_keystore_with_the_password_typed_this_session(tmp_path: Path) -> None:
    from veriframe_addon.session import ExtensionSession

    path = tmp_path / "keystore.json"
    path.write_text(json.dumps(encrypt_keystore(0xBEEF, "typed")))
    base = {"BACKEND_API_URL": "http://127.0.0.1:9", "WORKER_ADDRESS": "0x1", "WORKER_PRIVATE_KEY": "0x2"}
    session = ExtensionSession()
    with pytest.raises(ConfigError, match="needs its password"):
        session.build_config({}, "KEYSTORE", tmp_path / "key", environ=base, keystore=path)
    session.keystore_password = "typed"
    assert (
        session.build_config({}, "KEYSTORE", tmp_path / "key", environ=base, keystore=path).private_key
        == 0xBEEF
    )
    # Another source ignores a keystore the shell names: the operator chose that source.
    session.session_key = "0x3"
    shell = {**base, "WORKER_KEYSTORE": str(path)}
    assert session.build_config({}, "SESSION", tmp_path / "key", environ=shell).private_key == 3


# -- a busy computer ----------------------------------------------------------------------------------
BURN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux's /proc/stat")
def test_another_programs_cpu_use_counts_and_the_workers_own_does_not() -> None:
    load = CpuLoad()
    assert load.share() is None  # the first sample only primes
    burner = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        time.sleep(1.5)
        load.share()
        time.sleep(2.0)
        with_burner = load.share()
    finally:
        burner.kill()
        burner.wait()
    # One spinning process holds at least most of a core, whatever else runs on this machine.
    assert with_burner is not None and with_burner >= 0.6 / load.cores


def test_the_workers_own_cpu_time_is_not_someone_elses(tmp_path: Path) -> None:
    """A machine whose busy time grew by exactly this process's own CPU time is idle for others."""
    stat = tmp_path / "stat"
    ticks_per_second = os.sysconf("SC_CLK_TCK")

    def write(busy_seconds: float) -> None:
        stat.write_text(f"cpu  {round(busy_seconds * ticks_per_second)} 0 0 1000000 0 0 0 0 0 0\n")

    load = CpuLoad(stat)
    write(100.0)
    started = sum(os.times()[:4])
    load.share()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # the worker itself busy for a second
        pass
    write(100.0 + sum(os.times()[:4]) - started)
    share = load.share()
    assert share is not None and share < 0.1 / load.cores  # counted, it would be about one core


@pytest.mark.parametrize(
    ("text", "share"), [("off", None), ("", None), ("on", 0.5), ("0.3", 0.3), ("25%", 0.25)]
)
def test_pause_when_busy_reads_off_on_or_a_share(text: str, share: float | None) -> None:
    base = {"BACKEND_API_URL": "http://127.0.0.1:9", "WORKER_ADDRESS": "0x1", "WORKER_PRIVATE_KEY": "0x2"}
    assert load_config(environ={**base, "PAUSE_WHEN_BUSY": text}).busy_cpu_share == share
    with pytest.raises(ConfigError, match="PAUSE_WHEN_BUSY"):
        load_config(environ={**base, "PAUSE_WHEN_BUSY": "150%"})
