"""k8s-file parsing, partial-line joining, --tail and following (toolkit.runtime.logs)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from toolkit.errors import PodunitError
from toolkit.runtime.logs import (
    K8sFileFollower,
    LogFormatError,
    LogLine,
    PartialJoiner,
    journal_lines,
    last_lines,
    no_logs_message,
    parse_k8s_log,
    parse_k8s_record,
    show_logs,
)

# Lines exactly as conmon 2.1.6 writes them (set_k8s_timestamp: %09ld nanoseconds, ±hh:mm).
CONMON_SAMPLE = (
    b"2026-11-23T09:01:02.123456789+00:00 stdout F hello\n"
    b"2026-11-23T09:01:02.123500000+00:00 stderr F oops: error\n"
    b"2026-11-23T09:01:02.200000000+00:00 stdout P first half \n"
    b"2026-11-23T09:01:02.200000001+00:00 stderr P err-part \n"
    b"2026-11-23T09:01:02.200000002+00:00 stdout F second half\n"
    b"2026-11-23T09:01:02.200000003+00:00 stderr F err-end\n"
    b"2026-11-23T09:01:03.000000000+01:00 stdout F \n"
    b"2026-11-23T09:01:04.000000000-05:30 stdout F  two  spaces  kept \n"
)


def test_record_fields() -> None:
    record = parse_k8s_record(b"2026-11-23T09:01:02.123456789+00:00 stderr P a b  c\n")
    assert record.timestamp == "2026-11-23T09:01:02.123456789+00:00"
    assert record.stream == "stderr"
    assert record.partial is True
    assert record.text == b"a b  c"


def test_empty_line_record_has_empty_text() -> None:
    assert parse_k8s_record(b"2026-11-23T09:01:03.000000000+01:00 stdout F").text == b""


@pytest.mark.parametrize(
    "bad",
    [b"garbage\n", b"2026-11-23T09:01:02Z stdin F x\n", b"2026-11-23T09:01:02Z stdout X x\n"],
)
def test_bad_record_is_a_podunit_error(bad: bytes) -> None:
    with pytest.raises(LogFormatError, match="not a k8s-file log line"):
        parse_k8s_record(bad)


def test_parse_sample_joins_partials_per_stream() -> None:
    lines = parse_k8s_log(CONMON_SAMPLE)
    assert [(line.stream, line.text) for line in lines] == [
        ("stdout", b"hello"),
        ("stderr", b"oops: error"),
        ("stdout", b"first half second half"),
        ("stderr", b"err-part err-end"),
        ("stdout", b""),
        ("stdout", b" two  spaces  kept "),
    ]
    # a joined line carries the timestamp of its first record
    assert lines[2].timestamp == "2026-11-23T09:01:02.200000000+00:00"


def test_unterminated_last_line_is_not_parsed_yet() -> None:
    data = CONMON_SAMPLE + b"2026-11-23T09:01:05.000000000+00:00 stdout F half-writ"
    assert parse_k8s_log(data)[-1].text == b" two  spaces  kept "


def test_dangling_partial_is_flushed_at_end() -> None:
    data = b"2026-11-23T09:01:02.1+00:00 stdout P no newline at exit\n"
    assert parse_k8s_log(data) == [
        LogLine("2026-11-23T09:01:02.1+00:00", "stdout", b"no newline at exit")
    ]


def test_non_utf8_bytes_survive() -> None:
    data = b"2026-11-23T09:01:02.1+00:00 stdout F \xff\xfe latin\xe9\n"
    assert parse_k8s_log(data)[0].text == b"\xff\xfe latin\xe9"


@pytest.mark.parametrize(("count", "expected"), [(None, 6), (0, 0), (2, 2), (100, 6)])
def test_tail(count: int | None, expected: int) -> None:
    lines = parse_k8s_log(CONMON_SAMPLE)
    tailed = last_lines(lines, count)
    assert len(tailed) == expected
    if expected:
        assert tailed[-1] == lines[-1]


def test_negative_tail_is_refused() -> None:
    with pytest.raises(PodunitError, match="--tail must not be negative"):
        last_lines([], -1)


def test_journal_entries_priority_and_partials() -> None:
    entries: list[dict[str, object]] = [
        {"MESSAGE": b"out\n", "PRIORITY": 6},
        {"MESSAGE": b"err ", "PRIORITY": 3, "CONTAINER_PARTIAL_MESSAGE": "true"},
        {"MESSAGE": b"continued\n", "PRIORITY": 3},
        {"MESSAGE": "text", "PRIORITY": "6"},
    ]
    joiner = PartialJoiner()
    lines = journal_lines(entries, joiner)
    assert [(line.stream, line.text) for line in lines] == [
        ("stdout", b"out"),
        ("stderr", b"err continued"),
        ("stdout", b"text"),
    ]
    assert joiner.flush() == []


@pytest.mark.parametrize(
    ("driver", "needle"),
    [("passthrough", "see journalctl -u web"), ("none", "discarded")],
)
def test_drivers_without_logs_explain_themselves(driver: str, needle: str) -> None:
    assert needle in no_logs_message(driver, "web")
    with pytest.raises(PodunitError, match=needle):
        show_logs(
            name="web",
            container_id="x" * 64,
            driver=driver,
            log_path=None,
            tail=None,
            follow=False,
            still_running=lambda: False,
        )


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def test_follower_reads_increments_and_half_written_lines(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    follower = K8sFileFollower(log)
    assert follower.read_available() == []  # not created yet
    _append(log, b"2026-11-23T09:01:02.1+00:00 stdout F one\n2026-11-23T09:01:02.2+00:00 std")
    assert [line.text for line in follower.read_available()] == [b"one"]
    _append(log, b"out F two\n")
    assert [line.text for line in follower.read_available()] == [b"two"]
    follower.close()


def test_follower_survives_conmon_style_replacement(tmp_path: Path) -> None:
    """conmon --log-size-max writes a new file and renames it over the old path."""
    log = tmp_path / "ctr.log"
    follower = K8sFileFollower(log)
    _append(log, b"2026-11-23T09:01:02.1+00:00 stdout F before\n")
    assert [line.text for line in follower.read_available()] == [b"before"]
    _append(log, b"2026-11-23T09:01:02.2+00:00 stdout F late-in-old\n")
    replacement = tmp_path / "ctr.log.tmp"
    replacement.write_bytes(b"2026-11-23T09:01:02.3+00:00 stdout F after\n")
    os.rename(replacement, log)
    assert [line.text for line in follower.read_available()] == [b"late-in-old", b"after"]
    follower.close()


def test_follower_survives_truncation(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    follower = K8sFileFollower(log)
    _append(log, b"2026-11-23T09:01:02.1+00:00 stdout F a long first line\n")
    assert len(follower.read_available()) == 1
    with open(log, "r+b") as handle:
        handle.truncate(0)
    _append(log, b"2026-11-23T09:01:02.2+00:00 stdout F x\n")
    assert [line.text for line in follower.read_available()] == [b"x"]
    follower.close()


def test_follow_stops_after_container_exit_without_losing_lines(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    log.write_bytes(b"")
    running = threading.Event()
    running.set()

    def writer() -> None:
        for number in range(5):
            _append(log, f"2026-11-23T09:01:02.{number}+00:00 stdout F n{number}\n".encode())
            time.sleep(0.02)
        running.clear()

    thread = threading.Thread(target=writer)
    thread.start()
    follower = K8sFileFollower(log)
    seen = [line.text for line in follower.follow(running.is_set, poll=0.01)]
    thread.join()
    follower.close()
    assert seen == [f"n{number}".encode() for number in range(5)]


def test_show_logs_k8s_file_tail(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    log.write_bytes(CONMON_SAMPLE)
    shown: list[LogLine] = []
    show_logs(
        name="web",
        container_id="x" * 64,
        driver="k8s-file",
        log_path=log,
        tail=2,
        follow=False,
        still_running=lambda: False,
        emit=shown.append,
    )
    assert [line.text for line in shown] == [b"", b" two  spaces  kept "]


@pytest.fixture
def store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PODUNIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PODUNIT_RUN_DIR", str(tmp_path / "run"))
    return tmp_path


def _add_container(name: str, log_driver: str, log_path: str | None = None) -> None:
    from toolkit.storage.paths import RuntimePaths
    from toolkit.storage.records import ContainerOptions, ContainerRecord
    from toolkit.storage.state import StateStore

    options = ContainerOptions(log_driver=log_driver, log_path=log_path)
    with StateStore(RuntimePaths.for_mode(False)) as store:
        store.add(
            ContainerRecord(
                id=name.ljust(64, "0"),
                name=name,
                runtime="/usr/sbin/runc",
                status="exited",
                created_at=0.0,
                spec={},
                options=options,
            )
        )


def test_cli_logs_k8s_file_splits_streams(
    store_env: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from toolkit.cli.main import main

    log = store_env / "web.log"
    log.write_bytes(CONMON_SAMPLE)
    _add_container("web", "k8s-file", str(log))
    assert main(["logs", "web"]) == 0
    out, err = capfd.readouterr()
    assert out == "hello\nfirst half second half\n\n two  spaces  kept \n"
    assert err == "oops: error\nerr-part err-end\n"
    assert main(["logs", "--tail", "1", "web"]) == 0
    assert capfd.readouterr().out == " two  spaces  kept \n"


def test_cli_logs_follow_of_an_exited_container_ends(
    store_env: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from toolkit.cli.main import main

    log = store_env / "done.log"
    log.write_bytes(b"2026-11-23T09:01:02.1+00:00 stdout F last words\n")
    _add_container("done", "k8s-file", str(log))
    assert main(["logs", "-f", "done"]) == 0
    assert capfd.readouterr().out == "last words\n"


def test_cli_logs_errors(store_env: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from toolkit.cli.main import main

    _add_container("pt", "passthrough")
    assert main(["logs", "pt"]) == 125
    assert "see journalctl -u pt" in capfd.readouterr().err
    assert main(["logs", "missing"]) == 125
    assert "no such container: missing" in capfd.readouterr().err
    log = store_env / "neg.log"
    log.write_bytes(CONMON_SAMPLE)
    _add_container("neg", "k8s-file", str(log))
    assert main(["logs", "--tail", "-2", "neg"]) == 125
    assert "--tail must not be negative" in capfd.readouterr().err


def test_show_logs_ends_with_an_unfinished_last_line(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    log.write_bytes(
        b"2026-11-23T09:01:02.1+00:00 stdout F done\n"
        b"2026-11-23T09:01:02.2+00:00 stdout P no-newline\n"
    )
    shown: list[LogLine] = []
    show_logs(
        name="web",
        container_id="x" * 64,
        driver="k8s-file",
        log_path=log,
        tail=None,
        follow=False,
        still_running=lambda: False,
        emit=shown.append,
    )
    assert [line.text for line in shown] == [b"done", b"no-newline"]


def test_cli_logs_into_a_closed_pipe_ends_like_cat(store_env: Path) -> None:
    import subprocess
    import sys

    log = store_env / "long.log"
    log.write_bytes(b"".join(b"2026-11-23T09:01:02.1+00:00 stdout F line %d\n" % i
                             for i in range(100_000)))  # fmt: skip
    _add_container("long", "k8s-file", str(log))
    reader = subprocess.Popen(["head", "-n", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    writer = subprocess.run(
        [sys.executable, "-m", "toolkit.cli.main", "logs", "long"],
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        check=False,
    )
    assert reader.stdin is not None and reader.stdout is not None
    reader.stdin.close()
    assert reader.stdout.read() == b"line 0\n"
    reader.wait()
    assert writer.returncode == 141
    assert writer.stderr == b""
