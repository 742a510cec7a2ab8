"""``VERIFRAME_ENV``: the defaults each mode picks, each one overridable, and every bad value named."""

from __future__ import annotations

from pathlib import Path

import pytest

from veriframe_addon.worker.config import WorkerConfig, load_config
from veriframe_addon.worker.errors import ConfigError
from veriframe_addon.worker.service import argument_parser

KEY = "0x" + "3" * 60


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "BACKEND_API_URL": "http://127.0.0.1:9/api/v1",
        "WORKER_ADDRESS": "0x1234",
        "WORKER_PRIVATE_KEY": KEY,
        "VERIFRAME_DATA_DIR": str(tmp_path / "data"),
        **extra,
    }


def _settings(config: WorkerConfig) -> tuple:
    return (config.env_mode, config.log_level, config.log_format, config.poll_interval)


def test_development_is_the_default_verbose_text_and_ten_second_polls(tmp_path: Path) -> None:
    config = load_config(environ=_env(tmp_path))
    assert _settings(config) == ("development", "DEBUG", "text", 10.0)
    assert config.log_file == tmp_path / "data" / "logs" / "worker.log"
    assert (config.log_file_mb, config.log_file_count) == (10.0, 5)
    assert (config.status_port, config.status_host) == (None, "127.0.0.1")


@pytest.mark.parametrize("spelling", ["production", "PRODUCTION", "prod", " Production "])
def test_production_picks_json_logs_and_a_slower_poll(tmp_path: Path, spelling: str) -> None:
    config = load_config(environ=_env(tmp_path, VERIFRAME_ENV=spelling))
    assert _settings(config) == ("production", "INFO", "json", 30.0)
    assert config.log_file == tmp_path / "data" / "logs" / "worker.log"


def test_every_production_default_yields_to_its_own_variable(tmp_path: Path) -> None:
    config = load_config(
        environ=_env(
            tmp_path,
            VERIFRAME_ENV="production",
            LOG_LEVEL="debug",
            LOG_FORMAT="TEXT",
            POLL_INTERVAL="5",
            LOG_FILE="off",
            STATUS_PORT="9123",
            STATUS_HOST="0.0.0.0",
        )
    )
    assert _settings(config) == ("production", "DEBUG", "text", 5.0)
    assert config.log_file is None
    assert (config.status_port, config.status_host) == (9123, "0.0.0.0")


def test_log_file_place_size_and_count_are_settings(tmp_path: Path) -> None:
    config = load_config(
        environ=_env(
            tmp_path, LOG_FILE=str(tmp_path / "elsewhere.log"), LOG_FILE_MB="0.5", LOG_FILE_COUNT="2"
        )
    )
    assert config.log_file == tmp_path / "elsewhere.log"
    assert (config.log_file_mb, config.log_file_count) == (0.5, 2)
    assert load_config(environ=_env(tmp_path, STATUS_PORT="0")).status_port == 0  # any free port
    assert load_config(environ=_env(tmp_path, LOG_LEVEL="warn")).log_level == "WARNING"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VERIFRAME_ENV", "staging"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("LOG_FILE_MB", "0"),
        ("LOG_FILE_MB", "ten"),
        ("LOG_FILE_COUNT", "0"),
        ("LOG_FILE_COUNT", "1.5"),
        ("STATUS_PORT", "70000"),
        ("STATUS_PORT", "-1"),
        ("STATUS_PORT", "http"),
        ("STATUS_PORT", "80.5"),
        ("POLL_INTERVAL", "soon"),
    ],
)
def test_a_bad_value_names_its_variable(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ=_env(tmp_path, **{"VERIFRAME_ENV": "production", variable: value}))
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_a_log_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ=_env(tmp_path, LOG_FILE=str(tmp_path)))
    assert caught.value.variable == "LOG_FILE"


def test_command_line_options_override_the_settings() -> None:
    parser = argument_parser("python -m veriframe_addon")
    args = parser.parse_args(["--log-level", "debug", "--status-port", "0", "--max-jobs", "1"])
    assert (args.log_level, args.status_port, args.status_host, args.max_jobs) == ("DEBUG", 0, None, 1)
    bare = parser.parse_args([])
    assert (bare.log_level, bare.status_port) == (None, None)  # the settings decide
    with pytest.raises(SystemExit):
        parser.parse_args(["--log-level", "chatty"])
