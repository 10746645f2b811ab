"""ICE server settings: what is accepted and what is refused."""

from __future__ import annotations

import pytest

from media.ice import IceServer, ice_servers, rtc_configuration
from rooms.errors import ConfigError


def test_settings_list_becomes_ice_servers() -> None:
    """Browser-style dictionaries, one URL or several, become IceServer objects."""
    servers = ice_servers(
        [
            {"urls": "stun:stun.school.example:3478"},
            {
                "urls": ["turn:turn.school.example:3478", "turns:turn.school.example"],
                "username": "u",
                "credential": "c",
            },
        ]
    )
    assert servers[0] == IceServer(urls=("stun:stun.school.example:3478",))
    assert servers[1].urls[1] == "turns:turn.school.example"
    config = rtc_configuration(servers)
    assert config.iceServers is not None
    assert len(config.iceServers) == 2
    assert config.iceServers[1].username == "u"


def test_no_servers_is_an_empty_list_not_google() -> None:
    """No ICE servers gives aiortc an empty list, so it does not use its default."""
    assert rtc_configuration(()).iceServers == []


@pytest.mark.parametrize(
    "entry",
    [
        {},
        {"urls": []},
        {"urls": 3478},
        {"urls": "http://turn.example"},
        {"urls": "turn:turn.example"},
        {"urls": "stun:s.example", "username": 1},
        {"urls": "stun:s.example", "password": "x"},
    ],
)
def test_bad_entries_are_refused_with_the_value(entry: dict[str, object]) -> None:
    """Missing or wrong URLs, TURN without credentials, unknown keys: ConfigError."""
    with pytest.raises(ConfigError) as raised:
        ice_servers([entry])
    assert raised.value.value is not None
