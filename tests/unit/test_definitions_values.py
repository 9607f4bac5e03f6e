"""Normalisation of single values (spec §1.1): durations, sizes, signals, ports, volumes, users."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.definitions import values as v
from toolkit.definitions.model import Mount, MountType, PortMapping


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10),
        ("1m30s", 90),
        ("500ms", 0.5),
        ("90", 90),
        ("1.5", 1.5),
        ("2h", 7200),
        ("1d", 86400),
        ("1m 30s", 90),
        ("250us", 0.00025),
        ("0", 0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert v.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10x", "s", "1.2.3s", "-5s", "10 seconds", "m10"])
def test_bad_durations_quote_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as caught:
        v.parse_duration(text)
    assert repr(text)[1:-1] in str(caught.value)


@given(st.integers(min_value=0, max_value=10**12))
def test_duration_round_trip(micros: int) -> None:
    value = timedelta(microseconds=micros)
    assert v.parse_duration(v.format_duration(value)) == value


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 << 20),
        ("1G", 1 << 30),
        ("64k", 64 << 10),
        ("64m", 64 << 20),
        ("1024", 1024),
        ("100b", 100),
        ("100MB", 100 << 20),
        ("1GiB", 1 << 30),
        ("1.5g", 3 << 29),
        ("2T", 2 << 40),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert v.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "12Q", "M", "1.2.3M", "-1M", "ten"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        v.parse_size(text)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["", "k", "M", "g", "T"]))
def test_size_round_trip(count: int, unit: str) -> None:
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit.lower()]
    assert v.parse_size(f"{count}{unit}") == count * factor


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("SIGTERM", 15),
        ("TERM", 15),
        ("sigterm", 15),
        ("15", 15),
        ("SIGKILL", 9),
        ("SIGHUP", 1),
        ("SIGRTMIN", 34),
        ("SIGRTMIN+3", 37),
        ("RTMAX-1", 63),
        ("SIGRTMAX", 64),
        ("SIGWINCH", 28),
        ("64", 64),
    ],
)
def test_signals(text: str, number: int) -> None:
    assert v.parse_signal(text) == number


@pytest.mark.parametrize(
    "text", ["SIGFOO", "0", "65", "SIGRTMIN-1", "SIGRTMIN+31", "RTMAX+1", "", "SIG"]
)
def test_bad_signals(text: str) -> None:
    with pytest.raises(ValueError, match="signal"):
        v.parse_signal(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080:80", [PortMapping(8080, 80)]),
        ("127.0.0.1:8080:80", [PortMapping(8080, 80, "tcp", "127.0.0.1")]),
        ("53:53/udp", [PortMapping(53, 53, "udp")]),
        ("[::1]:80:8080/tcp", [PortMapping(80, 8080, "tcp", "::1")]),
        ("8000-8001:80-81", [PortMapping(8000, 80), PortMapping(8001, 81)]),
        ("65535:1", [PortMapping(65535, 1)]),
    ],
)
def test_port_mappings(text: str, expected: list[PortMapping]) -> None:
    assert v.parse_port_mapping(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("80", "has no host port"),
        ("0:80", "out of range"),
        ("70000:80", "'70000' out of range 1..65535"),
        ("80:80/sctp", "invalid protocol 'sctp'"),
        ("[::1:80:80", "invalid IPv6 address"),
        ("::1:80:80", "invalid port mapping"),
        ("a:b", "invalid port 'a'"),
        ("8000-8002:80-81", "different length"),
        ("8001-8000:80-81", "invalid port range"),
        ("host.example:80:80", "invalid host address"),
    ],
)
def test_bad_port_mappings(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        v.parse_port_mapping(text)
    assert fragment in str(caught.value)


@given(st.integers(1, 65535), st.integers(1, 65535), st.sampled_from(["tcp", "udp"]))
def test_port_round_trip(host: int, container: int, protocol: str) -> None:
    assert v.parse_port_mapping(f"{host}:{container}/{protocol}") == [
        PortMapping(host, container, protocol)
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("./data:/data", Mount(MountType.BIND, "/data", "/defs/data")),
        ("../x:/x:ro", Mount(MountType.BIND, "/x", "/x", read_only=True)),
        ("/srv:/srv:rw", Mount(MountType.BIND, "/srv", "/srv")),
        ("/srv:/srv:ro,rslave", Mount(MountType.BIND, "/srv", "/srv", True, None, ("rslave",))),
        ("cache:/var/cache", Mount(MountType.VOLUME, "/var/cache", "cache")),
        ("/anonymous", Mount(MountType.VOLUME, "/anonymous")),
    ],
)
def test_volumes(text: str, expected: Mount) -> None:
    assert v.parse_volume(text, "/defs") == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("data", "container path 'data' must be absolute"),
        ("/a:b", "container path 'b' must be absolute"),
        ("/a:/b:xx", "unknown volume option 'xx'"),
        ("/a:/b:ro:z", "invalid volume"),
        ("-bad:/b", "invalid volume name '-bad'"),
    ],
)
def test_bad_volumes(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        v.parse_volume(text, "/defs")
    assert fragment in str(caught.value)


def test_tmpfs() -> None:
    assert v.parse_tmpfs("/run") == Mount(MountType.TMPFS, "/run")
    assert v.parse_tmpfs("/tmp:size=64m,mode=1777,noexec") == Mount(
        MountType.TMPFS, "/tmp", None, False, 64 << 20, ("mode=1777", "noexec")
    )
    with pytest.raises(ValueError, match="unknown tmpfs option 'bogus'"):
        v.parse_tmpfs("/tmp:bogus")
    with pytest.raises(ValueError, match="invalid size"):
        v.parse_tmpfs("/tmp:size=lots")


@pytest.mark.parametrize("text", ["1000", "1000:1000", "www-data", "nginx:nginx", "0:0"])
def test_users(text: str) -> None:
    assert v.check_user(text) == text


@pytest.mark.parametrize("text", ["", ":", "a:", ":b", "www data", "a:b:c", "a/b", "a\nb"])
def test_bad_users(text: str) -> None:
    with pytest.raises(ValueError, match="invalid user"):
        v.check_user(text)


def test_capabilities() -> None:
    assert v.parse_capability("net_admin") == "CAP_NET_ADMIN"
    assert v.parse_capability("CAP_SYS_TIME") == "CAP_SYS_TIME"
    assert v.parse_capability("all") == "ALL"
    with pytest.raises(ValueError, match=r"did you mean 'NET_RAW'\?"):
        v.parse_capability("NET_RAWW")


def test_host_paths_resolve_against_the_definition_directory() -> None:
    assert v.resolve_host_path("data", "/etc/podunit") == "/etc/podunit/data"
    assert v.resolve_host_path("../x/./y", "/etc/podunit") == "/etc/x/y"
    assert v.resolve_host_path("/abs", "/etc/podunit") == "/abs"


def test_quote_shows_control_characters_escaped() -> None:
    assert v.quote("plain") == "'plain'"
    assert v.quote("a\nb") == "'a\\nb'"
    assert v.has_control("x\x1b") and not v.has_control("ünï %$;")


def test_hostnames() -> None:
    assert v.check_hostname("web-1.example") == "web-1.example"
    for bad in ("-web", "web_1", "a" * 65, "a..b", ""):
        with pytest.raises(ValueError, match="invalid hostname"):
            v.check_hostname(bad)
