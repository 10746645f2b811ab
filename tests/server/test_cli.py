"""The ``lophoc`` command: help, tokens, settings precedence and bad values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client_sdk.protocol import Role
from server.auth import verify
from tests.helpers import free_port

from .conftest import REPO, SECRET


def lophoc(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m server.cli`` with no LOPHOC_* but those in ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOPHOC_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def settings_of(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """The JSON that ``lophoc settings`` prints."""
    done = lophoc("settings", *args, env=env)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


HELP = {
    "": ["serve", "token", "settings", "check", "secret"],
    "serve": [
        "--config",
        "--data-dir",
        "--broker",
        "--store",
        "--host",
        "--port",
        "--allowed-origin",
        "--node",
        "--log-level",
    ],
    "token": [
        "--config",
        "--data-dir",
        "--role",
        "--user",
        "--room",
        "--name",
        "--school",
        "--class",
        "--ttl",
        "--not-before",
    ],
    "settings": ["--config", "--data-dir", "--broker", "--store", "--port"],
    "check": ["--config", "--data-dir", "--broker", "--store"],
    "secret": ["LOPHOC_SECRET"],
}


@pytest.mark.parametrize("command", list(HELP))
def test_help_exits_0_and_names_the_flags(command: str) -> None:
    """``--help`` of lophoc and of each subcommand succeeds and lists its flags."""
    done = lophoc(*([command] if command else []), "--help")
    assert done.returncode == 0, done.stderr
    for flag in HELP[command]:
        assert flag in done.stdout


def test_console_script_is_installed() -> None:
    """The ``lophoc`` entry point of pyproject.toml runs the same CLI."""
    script = shutil.which("lophoc", path=str(Path(sys.executable).parent))
    assert script is not None
    done = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0
    assert "serve" in done.stdout


def test_token_verifies_and_carries_its_claims(tmp_path: Path) -> None:
    """A minted token verifies with the node key and holds role, rooms and more."""
    before = int(time.time())
    done = lophoc(
        "token",
        "--role",
        "co-teacher",
        "--user",
        "gv-lan",
        "--name",
        "Cô Lan",
        "--room",
        "lesson-1",
        "--room",
        "lesson-2",
        "--school",
        "THCS Lê Lợi",
        "--class",
        "9A",
        "--ttl",
        "120",
        "--data-dir",
        str(tmp_path),
        env={"LOPHOC_SECRET": SECRET},
    )
    assert done.returncode == 0, done.stderr
    claims = verify(SECRET, done.stdout.strip())
    assert claims.user == "gv-lan"
    assert claims.name == "Cô Lan"
    assert claims.role is Role.CO_TEACHER
    assert claims.rooms == ("lesson-1", "lesson-2")
    assert claims.school == "THCS Lê Lợi"
    assert claims.class_ == "9A"
    assert before + 120 <= claims.expires_at <= int(time.time()) + 120


def test_token_without_a_secret_uses_the_data_dir_key(tmp_path: Path) -> None:
    """With no LOPHOC_SECRET the key is created in the data dir, and reused."""
    first = lophoc(
        "token", "--role", "student", "--user", "s1", "--room", "r1",
        "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "secret"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    assert verify(key, first.stdout.strip()).user == "s1"

    second = lophoc(
        "token", "--role", "student", "--user", "s2", "--room", "r1",
        "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert verify(key, second.stdout.strip()).user == "s2"


def test_token_for_a_bad_room_id_exits_2(tmp_path: Path) -> None:
    """A room id the protocol would refuse is refused when minting, exit 2."""
    done = lophoc(
        "token", "--role", "student", "--user", "s1", "--room", "phòng học 1",
        "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 2
    assert "phòng học 1" in done.stderr
    assert done.stdout == ""


def test_settings_precedence_file_env_flag(tmp_path: Path) -> None:
    """A setting comes from the flag, else LOPHOC_*, else the --config file."""
    config = tmp_path / "node.toml"
    config.write_text('[lophoc]\nport = 1111\nburst = 7\nbroker_url = "memory://"\n')

    from_file = settings_of("--config", str(config))
    assert (from_file["port"], from_file["burst"]) == (1111, 7)

    env = {"LOPHOC_PORT": "2222"}
    from_env = settings_of("--config", str(config), env=env)
    assert (from_env["port"], from_env["burst"]) == (2222, 7)

    from_flag = settings_of("--config", str(config), "--port", "3333", env=env)
    assert (from_flag["port"], from_flag["burst"]) == (3333, 7)

    via_env_config = settings_of(env={"LOPHOC_CONFIG": str(config)})
    assert via_env_config["port"] == 1111


def test_drain_seconds_from_file_env_and_flag(tmp_path: Path) -> None:
    """``drain_seconds`` is read like every setting, the flag winning."""
    config = tmp_path / "node.toml"
    config.write_text("[lophoc]\ndrain_seconds = 4.5\n")
    assert settings_of("--config", str(config))["drain_seconds"] == 4.5
    env = {"LOPHOC_DRAIN_SECONDS": "6"}
    assert settings_of("--config", str(config), env=env)["drain_seconds"] == 6.0
    flag = settings_of("--drain-seconds", "2.5", env=env)
    assert flag["drain_seconds"] == 2.5


def test_settings_list_from_the_environment(tmp_path: Path) -> None:
    """LOPHOC_ALLOWED_ORIGINS is a comma-separated list."""
    shown = settings_of(
        env={"LOPHOC_ALLOWED_ORIGINS": "https://a.example, https://b.example"}
    )
    assert shown["allowed_origins"] == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LOPHOC_PORT": "notaport"}, "port"),
        ({"LOPHOC_PORT": "70000"}, "port"),
        ({"LOPHOC_BURST": "0"}, "burst"),
        ({"LOPHOC_MESSAGES_PER_SECOND": "fast"}, "messages_per_second"),
        ({"LOPHOC_FOO": "1"}, "LOPHOC_FOO"),
        ({"LOPHOC_DRAIN_SECONDS": "0"}, "drain_seconds"),
    ],
)
def test_bad_setting_exits_2_naming_it(env: dict[str, str], named: str) -> None:
    """A bad or unknown setting stops the command with exit 2 and its name."""
    done = lophoc("settings", env=env)
    assert done.returncode == 2
    assert named in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_bad_settings_file_exits_2(tmp_path: Path) -> None:
    """A settings file that is missing or not TOML stops with exit 2."""
    broken = tmp_path / "broken.toml"
    broken.write_text("[lophoc\nport = ")
    for path in (broken, tmp_path / "missing.toml"):
        done = lophoc("settings", "--config", str(path))
        assert done.returncode == 2
        assert str(path) in done.stderr


def test_serve_refuses_a_bad_setting_before_listening(tmp_path: Path) -> None:
    """``lophoc serve`` with a bad value exits 2 instead of starting."""
    done = lophoc("serve", "--data-dir", str(tmp_path), env={"LOPHOC_PORT": "notaport"})
    assert done.returncode == 2
    assert "port" in done.stderr


def test_settings_mask_the_secret() -> None:
    """``lophoc settings`` shows that a secret is set, never the secret."""
    shown = lophoc("settings", env={"LOPHOC_SECRET": SECRET})
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["secret"] == "(set)"
    assert SECRET not in shown.stdout
    assert SECRET not in shown.stderr


def test_secret_prints_a_fresh_key() -> None:
    """``lophoc secret`` prints a long random key, different every time."""
    keys = {lophoc("secret").stdout.strip() for _ in range(2)}
    assert len(keys) == 2
    assert all(len(key) >= 48 for key in keys)


def test_check_reports_each_backend(tmp_path: Path) -> None:
    """``lophoc check`` exits 0 when both answer, 1 naming one that does not."""
    ok = lophoc("check", "--data-dir", str(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert "broker: ok" in ok.stdout
    assert "store: ok" in ok.stdout

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    down = lophoc("check", "--data-dir", str(tmp_path), "--broker", nowhere)
    assert down.returncode == 1
    assert "broker: unreachable" in down.stdout
    assert "store: ok" in down.stdout


def test_ice_servers_are_checked_and_their_credentials_masked(tmp_path: Path) -> None:
    """A TURN entry needs its credentials; printed settings hide them."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[lophoc]\n[[lophoc.ice_servers]]\nurls = ["turn:t.example:3478"]\n')
    good = tmp_path / "good.toml"
    good.write_text(
        "[lophoc]\n[[lophoc.ice_servers]]\n"
        'urls = ["turn:t.example:3478"]\nusername = "u"\ncredential = "hunter2"\n'
    )

    refused = lophoc("settings", "--config", str(bad))
    shown = lophoc("settings", "--config", str(good))

    assert refused.returncode == 2
    assert "ice_servers[0]" in refused.stderr
    assert shown.returncode == 0
    assert "hunter2" not in shown.stdout
    assert '"credential": "(set)"' in shown.stdout
