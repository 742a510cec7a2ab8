"""IPFS providers: a local or authenticated Kubo RPC API, Pinata, and a list of gateways.

Everything runs against real HTTP servers on 127.0.0.1: the devnet (``python -m devnet serve``, whose
RPC API can require an Authorization header), small FastAPI apps for a lying or recording gateway, and
``tests/pinata_standin.py``, which stands in for the real Pinata service (it cannot be reached from
here) following its documented request and answer shapes. The end-to-end tests run the real worker
(``python -m veriframe_addon --max-jobs 1``) and render with real Blender.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fastapi import FastAPI, Request, Response

from devnet.ipfs_node import BlockStore, create_rpc_app
from devnet.process import Devnet, free_port, running_devnet
from veriframe_addon.worker.config import load_config
from veriframe_addon.worker.errors import ConfigError, ContentMismatch, IpfsCredentialsRefused, IpfsError
from veriframe_addon.worker.ipfs.cid import cid_of_bytes, cid_of_file
from veriframe_addon.worker.ipfs.client import IpfsClient, client_from_config, gateway_url
from veriframe_addon.worker.ipfs.pinning import PinataUploader
from veriframe_addon.worker.net.retry import RetryPolicy
from veriframe_addon.worker.ops.setup_check import run_checks

from .conftest import WorkerRun, run_worker, worker_env
from .pinata_standin import PinataStandin, pinata_standin
from .servers import serve_app
from .test_worker_network import _evil_gateway

# Credentials made for these tests; each must never show up in a log line, an error or a repr.
API_USER, API_PASSWORD = "renderer", "correct-horse-battery-staple"
WRONG_PASSWORD = "incorrect-donkey-battery-staple"
API_TOKEN = "kubo-rpc-token-7f3a9c0e5b1d"
PINATA_JWT = (
    "eyJ0eXAiOiJKV1QiLCJzdGFuZGluIjoxfQ.eyJzdWIiOiJ2ZXJpZnJhbWUtdGVzdHMifQ.c3RhbmRpbi1zaWduYXR1cmUtOWQ0ZQ"
)
WRONG_JWT = "eyJ0eXAiOiJKV1QiLCJzdGFuZGluIjoxfQ.eyJzdWIiOiJ3cm9uZyJ9.d3Jvbmctc2lnbmF0dXJlLTExMTE"
RETRY_FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _secret_forms(*values: str) -> list[str]:
    """Every spelling of a credential that could leak: the value, the token or password in it, and the
    base64 of ``user:password``."""
    forms = set(values)
    for value in values:
        scheme, _, credentials = value.partition(" ")
        if scheme in ("Bearer", "Basic"):
            forms.add(credentials)
        elif ":" in value:
            forms.add(value.split(":", 1)[1])
            forms.add(base64.b64encode(value.encode()).decode())
    return sorted(forms)


def _assert_no_secret(text: str, *values: str) -> None:
    for form in _secret_forms(*values):
        assert form not in text, f"a credential ({form[:4]}...) leaked"


def _assert_nowhere(run: WorkerRun, *values: str) -> None:
    """Not in the worker's output, nor in any file it wrote (log files, journal, job state, render.log)."""
    _assert_no_secret(run.output, *values)
    for path in run.data_dir.rglob("*"):
        if path.is_file():
            _assert_no_secret(path.read_bytes().decode("latin-1"), *values)


def _job(devnet: Devnet, job_id: str) -> dict:
    return requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()


def _render_png(data_dir: Path, job_id: str) -> Path:
    [png] = (data_dir / "jobs" / job_id).rglob("*.png")
    return png


def _dead_url(path: str = "") -> str:
    return f"http://127.0.0.1:{free_port()}{path}"


# ------------------------------------------------------------------------------------ configuration


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "BACKEND_API_URL": "http://127.0.0.1:8000/api/v1",
        "WORKER_ADDRESS": "0x123abc",
        "WORKER_PRIVATE_KEY": "0x" + "5" * 60,
        "VERIFRAME_DATA_DIR": str(tmp_path / "data"),
    }


def test_defaults_are_one_local_gateway_and_kubo_without_credentials(env: dict[str, str]) -> None:
    config = load_config(env)
    assert config.ipfs_gateways == ("http://127.0.0.1:8080/ipfs",)
    assert config.ipfs_gateway_url == "http://127.0.0.1:8080/ipfs"
    assert config.ipfs_provider == "kubo" and config.pinata_api_url == "https://api.pinata.cloud"
    assert config.ipfs_api_auth is None and config.pinata_jwt is None


def test_gateway_list_is_read_in_order(env: dict[str, str]) -> None:
    config = load_config(
        env
        | {
            "IPFS_GATEWAY": " https://gw.one.example/ipfs/ ,http://127.0.0.1:8080,https://gw.one.example/ipfs,"
        }
    )
    assert config.ipfs_gateways == ("https://gw.one.example/ipfs", "http://127.0.0.1:8080")
    assert config.ipfs_gateway_url == "https://gw.one.example/ipfs"  # the panel's "the gateway"


@pytest.mark.parametrize(
    "value", [",", "https://gw.example/ipfs,ftp://gw.example", "https://gw.example,nope"]
)
def test_a_bad_gateway_entry_is_named(env: dict[str, str], value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env | {"IPFS_GATEWAY": value})
    assert caught.value.variable == "IPFS_GATEWAY"


@pytest.mark.parametrize(
    ("given", "header"),
    [
        (f"Bearer {API_TOKEN}", f"Bearer {API_TOKEN}"),
        (f"bearer   {API_TOKEN}", f"Bearer {API_TOKEN}"),
        (f"Basic {_basic(API_USER, API_PASSWORD)}", f"Basic {_basic(API_USER, API_PASSWORD)}"),
        (f"{API_USER}:{API_PASSWORD}", f"Basic {_basic(API_USER, API_PASSWORD)}"),
        ("project:pass word:with colons", f"Basic {_basic('project', 'pass word:with colons')}"),
    ],
)
def test_ipfs_api_auth_forms(env: dict[str, str], given: str, header: str) -> None:
    config = load_config(env | {"IPFS_API_AUTH": given})
    assert config.ipfs_api_auth == header
    _assert_no_secret(repr(config), given)


@pytest.mark.parametrize(
    "given",
    [
        API_TOKEN,
        "Bearer",
        f"Basic {API_PASSWORD}",
        f"Basic {base64.b64encode(b'nocolon').decode()}",
        f"Bearer {API_TOKEN}\r\nX-Injected: 1",
        f"Bearer tök{API_TOKEN}",
        f":{API_PASSWORD}",
    ],
)
def test_malformed_ipfs_api_auth_is_refused_without_echoing_it(env: dict[str, str], given: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env | {"IPFS_API_AUTH": given})
    assert caught.value.variable == "IPFS_API_AUTH"
    _assert_no_secret(str(caught.value), API_TOKEN, API_PASSWORD, "nocolon")


def test_credentials_in_the_api_url_are_refused(env: dict[str, str]) -> None:
    """The API URL is logged, so user:password in it would be too: IPFS_API_AUTH is the place for them."""
    with pytest.raises(ConfigError) as caught:
        load_config(env | {"IPFS_API": f"https://{API_USER}:{API_PASSWORD}@ipfs.example.org"})
    assert caught.value.variable == "IPFS_API" and "IPFS_API_AUTH" in str(caught.value)
    _assert_no_secret(str(caught.value), f"{API_USER}:{API_PASSWORD}")


def test_pinata_settings(env: dict[str, str]) -> None:
    config = load_config(
        env
        | {
            "IPFS_PROVIDER": "Pinata",
            "PINATA_JWT": f"Bearer {PINATA_JWT}",  # pasted with its scheme: dropped
            "PINATA_API_URL": "http://127.0.0.1:9999/",
        }
    )
    assert config.ipfs_provider == "pinata" and config.pinata_jwt == PINATA_JWT
    assert config.pinata_api_url == "http://127.0.0.1:9999"
    _assert_no_secret(repr(config), PINATA_JWT)

    for change, variable in (
        ({"IPFS_PROVIDER": "pinata"}, "PINATA_JWT"),  # pinata needs its JWT
        ({"IPFS_PROVIDER": "pinata", "PINATA_JWT": "0a1b2c3d4e5f60718293"}, "PINATA_JWT"),  # an API key
        ({"IPFS_PROVIDER": "infura"}, "IPFS_PROVIDER"),
        ({"PINATA_API_URL": "api.pinata.cloud"}, "PINATA_API_URL"),
    ):
        with pytest.raises(ConfigError) as caught:
            load_config(env | change)
        assert caught.value.variable == variable
        assert "0a1b2c3d4e5f60718293" not in str(caught.value)


def test_repr_of_a_config_holds_no_credential(env: dict[str, str]) -> None:
    config = load_config(
        env
        | {"IPFS_API_AUTH": f"{API_USER}:{API_PASSWORD}", "IPFS_PROVIDER": "pinata", "PINATA_JWT": PINATA_JWT}
    )
    client = client_from_config(config)
    assert repr(client.uploader) == "PinataUploader('https://api.pinata.cloud')"
    for text in (repr(config), str(config), repr(client)):
        _assert_no_secret(text, f"{API_USER}:{API_PASSWORD}", PINATA_JWT, env["WORKER_PRIVATE_KEY"])


# ------------------------------------------------------------------ downloads: sources and headers

PROBE = b"VeriFrame provider test probe\n"


def _recording_node(seen: list[tuple[str, str | None]]) -> FastAPI:
    """A gateway and an RPC ``cat`` serving ``PROBE``, recording the Authorization each request carried."""
    app = FastAPI()

    @app.get("/ipfs/{cid}")
    def gateway(cid: str, request: Request) -> Response:
        seen.append(("gateway", request.headers.get("authorization")))
        return Response(PROBE, media_type="application/octet-stream")

    @app.post("/api/v0/cat")
    def cat(request: Request) -> Response:
        seen.append(("cat", request.headers.get("authorization")))
        return Response(PROBE, media_type="text/plain")

    return app


@pytest.fixture
def recording() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    seen: list[tuple[str, str | None]] = []
    with serve_app(_recording_node(seen)) as url:
        yield url, seen


def test_the_api_credential_goes_to_the_api_only(
    recording: tuple[str, list[tuple[str, str | None]]], tmp_path: Path
) -> None:
    url, seen = recording
    cid = str(cid_of_bytes(PROBE))
    client = IpfsClient(url, [f"{url}/ipfs"], api_auth=f"Bearer {API_TOKEN}", policy=RETRY_FAST)
    assert client.download(cid, tmp_path / "a").source == f"gateway {url}/ipfs"
    assert client.download(cid, tmp_path / "b", sources=client.sources[-1:]).source == f"IPFS API {url}"
    assert seen == [("gateway", None), ("cat", f"Bearer {API_TOKEN}")]


def test_each_source_is_tried_in_order_and_every_byte_verified(
    recording: tuple[str, list[tuple[str, str | None]]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Down, then lying, then honest: the first two are logged by name and the third one's bytes are kept."""
    url, seen = recording
    cid = str(cid_of_bytes(PROBE))
    dead = _dead_url("/ipfs")
    with serve_app(_evil_gateway()) as evil:
        client = IpfsClient(_dead_url(), [dead, f"{evil}/ipfs", f"{url}/ipfs"], policy=RETRY_FAST)
        download = client.download(cid, tmp_path / "asset")
        assert download.source == f"gateway {url}/ipfs" and (tmp_path / "asset").read_bytes() == PROBE
        assert seen == [("gateway", None)]  # the RPC API, last in line, was not needed
        assert f"gateway {dead} could not deliver {cid}: unreachable" in caplog.text
        assert f"Refused gateway bytes for {cid} from {evil}/ipfs: they hash to" in caplog.text

        # Only liars and a dead API: the lie is what the caller hears about, nothing is kept.
        liars = IpfsClient(_dead_url(), [f"{evil}/ipfs", dead], policy=RETRY_FAST)
        with pytest.raises(ContentMismatch):
            liars.download(cid, tmp_path / "nothing")
        assert not (tmp_path / "nothing").exists()


def test_rpc_api_requiring_a_header(tmp_path: Path) -> None:
    """The devnet's RPC API with ``required_auth``: 401 without the header; the worker's client sends it on
    ``add`` and ``cat`` and, refused, says which variable to fix without repeating it."""
    store = BlockStore(tmp_path / "node")
    result = tmp_path / "render0001.png"
    result.write_bytes(b"\x89PNG\r\n\x1a\n the render")
    with serve_app(create_rpc_app(store, required_auth=f"{API_USER}:{API_PASSWORD}")) as api:
        bare = requests.post(f"{api}/api/v0/version", timeout=10)
        assert bare.status_code == 401 and bare.headers["WWW-Authenticate"].startswith("Basic ")

        client = IpfsClient(api, [], api_auth=f"Basic {_basic(API_USER, API_PASSWORD)}", policy=RETRY_FAST)
        cid = client.upload(result)
        assert cid == str(cid_of_file(result, cid_version=0))
        assert client.download(cid, tmp_path / "back").source == f"IPFS API {api}"

        for auth in (f"Bearer {API_TOKEN}", None):
            refused = IpfsClient(api, [], api_auth=auth, policy=RETRY_FAST)
            with pytest.raises(IpfsCredentialsRefused) as refusal:
                refused.upload(result)
            assert str(refusal.value) == "the IPFS API refused the request (HTTP 401): check IPFS_API_AUTH"
            assert refusal.value.variable == "IPFS_API_AUTH"
            with pytest.raises(IpfsError, match=r"HTTP 401\): check IPFS_API_AUTH\)$") as caught:
                refused.download(cid, tmp_path / "again")
            _assert_no_secret(str(caught.value), f"Bearer {API_TOKEN}", f"{API_USER}:{API_PASSWORD}")


# ------------------------------------------------------------------------------------------ Pinata


@pytest.fixture
def pinata(tmp_path: Path) -> Iterator[PinataStandin]:
    with pinata_standin(tmp_path / "pinata", PINATA_JWT) as standin:
        yield standin


def test_pinata_uploader_pins_with_the_jwt_and_checks_the_cid(pinata: PinataStandin, tmp_path: Path) -> None:
    """Stands in for Pinata (not reachable from here): pinFileToIPFS with the JWT, CIDv0 as computed here."""
    result = tmp_path / "render0001.png"
    result.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2000)  # > 256 KiB: several chunks
    session = requests.Session()
    uploader = PinataUploader(pinata.api_url, PINATA_JWT, session, policy=RETRY_FAST)
    cid = uploader.upload(result)
    assert cid == str(cid_of_file(result, cid_version=0))
    assert pinata.pins == [
        {"cid": cid, "cid_version": 0, "name": "render0001.png", "size": result.stat().st_size}
    ]
    served = requests.get(gateway_url(pinata.gateway_url, cid), timeout=10).content
    assert served == result.read_bytes()

    wrong = PinataUploader(pinata.api_url, WRONG_JWT, session, policy=RETRY_FAST)
    with pytest.raises(IpfsCredentialsRefused) as refused:
        wrong.upload(result)
    assert str(refused.value) == "Pinata refused the upload (HTTP 401): check PINATA_JWT"
    assert refused.value.variable == "PINATA_JWT"
    assert pinata.refused == ["wrong JWT"]
    _assert_no_secret(str(refused.value) + repr(wrong), WRONG_JWT, PINATA_JWT)


def test_a_pinning_service_answering_another_cid_is_caught(tmp_path: Path) -> None:
    app = FastAPI()

    @app.post("/pinning/pinFileToIPFS")
    def pin() -> dict[str, object]:
        return {
            "IpfsHash": str(cid_of_bytes(b"something else")),
            "PinSize": 1,
            "Timestamp": "2025-01-01T00:00:00Z",
        }

    result = tmp_path / "render0001.png"
    result.write_bytes(b"\x89PNG\r\n\x1a\n the render")
    with serve_app(app) as url, pytest.raises(ContentMismatch) as caught:
        PinataUploader(url, PINATA_JWT, requests.Session(), policy=RETRY_FAST).upload(result)
    assert caught.value.expected == str(cid_of_file(result, cid_version=0))


def _pinata_env(devnet: Devnet, pinata: PinataStandin, data_dir: Path, **overrides: str) -> dict[str, str]:
    """A worker that stores results on the Pinata stand-in."""
    return worker_env(
        devnet,
        data_dir,
        IPFS_PROVIDER="pinata",
        PINATA_API_URL=pinata.api_url,
        PINATA_JWT=PINATA_JWT,
        **overrides,
    )


def test_setup_check_names_the_gateway_that_fails(
    devnet: Devnet, pinata: PinataStandin, tmp_path: Path
) -> None:
    """Pinata stores the probe; of two gateways the dead one is named, the working one is not."""
    dead = _dead_url("/ipfs")
    env = _pinata_env(devnet, pinata, tmp_path / "w", IPFS_GATEWAY=f"{pinata.gateway_url},{dead}")
    results = {r.name: r for r in run_checks(load_config(environ=env))}
    failed = {name: r.message for name, r in results.items() if not r.ok}
    assert set(failed) == {"IPFS gateway"}, failed
    assert failed["IPFS gateway"].startswith(f"1 of 2 gateways failed: gateway {dead}: unreachable")
    assert pinata.gateway_url not in failed["IPFS gateway"]
    assert results["IPFS API"].message.startswith(f"stored the probe at Pinata {pinata.api_url} (Qm")
    assert pinata.pins and pinata.pins[0]["cid_version"] == 0


# ------------------------------------------------------------------------- end to end, real worker


def test_local_rpc_api_provider_completes_a_job(devnet: Devnet, sample_blend: Path, tmp_path: Path) -> None:
    """(a) The default: the devnet's RPC API without credentials stores the result."""
    job_id = devnet.cli("submit", str(sample_blend)).strip()
    run = run_worker(worker_env(devnet, tmp_path / "worker", IPFS_PROVIDER="kubo"), "--max-jobs", "1")
    assert run.returncode == 0, run.output
    job = _job(devnet, job_id)
    assert job["status"] == "completed", run.output
    assert job["full_result_cid"] == str(cid_of_file(_render_png(run.data_dir, job_id), cid_version=0))


def test_authenticated_rpc_api(sample_blend: Path, tmp_path: Path) -> None:
    """(b) A remote node that requires a header: a wrong IPFS_API_AUTH stops the worker (every job would
    fail alike) with a message that names the variable, keeping the claimed job; with the right one the
    same worker resumes the job and completes it. The only
    gateway is down, so the asset comes through the authenticated ``cat`` and the result goes through the
    authenticated ``add``. No spelling of either credential appears in the worker's or the devnet's log."""
    right = f"{API_USER}:{API_PASSWORD}"
    wrong = f"{API_USER}:{WRONG_PASSWORD}"
    with running_devnet(tmp_path / "devnet", ipfs_api_auth=right) as devnet:
        job_id = devnet.cli("submit", str(sample_blend)).strip()  # the devnet's own add sends the header
        env = worker_env(devnet, tmp_path / "worker", IPFS_GATEWAY=_dead_url("/ipfs"), IPFS_API_AUTH=wrong)

        first = run_worker(env, "--max-jobs", "1")
        assert first.returncode == 2, first.output  # a setting to fix: the worker stops, exit code 2
        assert "the IPFS API refused the request (HTTP 401): check IPFS_API_AUTH" in first.output
        assert f"Job {job_id} kept at stage 'claimed'" in first.output
        assert "Stopped: " in first.output and "resumes on the next start" in first.output
        assert _job(devnet, job_id)["status"] == "assigned"

        second = run_worker(
            env | {"IPFS_API_AUTH": f"Basic {_basic(API_USER, API_PASSWORD)}"}, "--max-jobs", "1"
        )
        assert second.returncode == 0, second.output
        assert "Downloaded and verified" in second.output and "from the IPFS API" in second.output
        job = _job(devnet, job_id)
        assert job["status"] == "completed", second.output
        assert job["full_result_cid"] == str(cid_of_file(_render_png(second.data_dir, job_id), cid_version=0))
        assert any("refused /api/v0/cat: wrong Authorization" in line for line in devnet.log_lines)
        devnet_log = "\n".join(devnet.log_lines)
    _assert_no_secret(devnet_log, right, wrong)
    _assert_nowhere(first, right, wrong)
    _assert_nowhere(second, right, wrong)


def test_pinata_provider_completes_a_job(
    devnet: Devnet, pinata: PinataStandin, sample_blend: Path, tmp_path: Path
) -> None:
    """(c) With IPFS_PROVIDER=pinata the result goes to the Pinata stand-in (standing in for the real
    service, which cannot be reached from here) and no IPFS node is needed: the RPC API is a closed port.
    Pinata's gateway is just the first gateway entry (it does not have the asset; the devnet's does)."""
    job_id = devnet.cli("submit", str(sample_blend)).strip()
    env = _pinata_env(
        devnet,
        pinata,
        tmp_path / "worker",
        IPFS_API=_dead_url(),
        IPFS_GATEWAY=f"{pinata.gateway_url},{devnet.env['IPFS_GATEWAY']}",
    )
    run = run_worker(env, "--max-jobs", "1")
    assert run.returncode == 0, run.output
    job = _job(devnet, job_id)
    assert job["status"] == "completed", run.output
    [pin] = pinata.pins
    assert job["full_result_cid"] == pin["cid"] and pin["cid_version"] == 0
    served = requests.get(gateway_url(pinata.gateway_url, pin["cid"]), timeout=10).content
    assert served == _render_png(run.data_dir, job_id).read_bytes()
    assert str(cid_of_bytes(served)) == job["full_result_cid"]
    # Pinned at Pinata, not added to the devnet's node.
    assert requests.get(gateway_url(devnet.env["IPFS_GATEWAY"], pin["cid"]), timeout=10).status_code == 404
    _assert_nowhere(run, PINATA_JWT)


def test_gateway_list_skips_a_dead_and_a_lying_gateway(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    """(d) IPFS_GATEWAY = a closed port, a gateway serving garbage, the devnet's gateway (the RPC API
    comes only after all three). The job completes from the third; the log names the two refused ones."""
    job_id = devnet.cli("submit", str(sample_blend)).strip()
    asset_cid = _job(devnet, job_id)["full_asset_cid"]
    dead = _dead_url("/ipfs")
    good = devnet.env["IPFS_GATEWAY"]
    with serve_app(_evil_gateway()) as evil:
        env = worker_env(
            devnet,
            tmp_path / "worker",
            IPFS_GATEWAY=f"{dead},{evil}/ipfs,{good}",
        )
        run = run_worker(env, "--max-jobs", "1")
    assert run.returncode == 0, run.output
    assert _job(devnet, job_id)["status"] == "completed", run.output
    assert f"gateway {dead} could not deliver {asset_cid}: unreachable" in run.output
    assert f"Refused gateway bytes for {asset_cid} from {evil}/ipfs: they hash to" in run.output
    assert f"bytes from the gateway {good} (" in run.output
