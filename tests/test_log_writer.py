"""The log writer thread: order kept, everything out at close, a stuck reader never holds the exit.

Against real streams: an in-memory recorder for order and threads, and an OS
pipe nobody reads for the stuck reader.  Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from crawler import log_writer
from crawler.log_writer import LineWriter
from testkit.registry import LocalRegistry, Seeder, package_annotations

GUARD_S = 30.0


class Recorder(io.StringIO):
    """Remembers which thread wrote each chunk, and how many flushes followed."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set[str] = set()
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writers.add(threading.current_thread().name)
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_lines_from_many_threads_arrive_in_each_threads_order_written_by_the_writer() -> None:
    sink = Recorder()
    writer = LineWriter(sink)

    def produce(n: int) -> None:
        for i in range(500):
            writer.write(f"{n} {i}\n")

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD_S)
    assert writer.close(GUARD_S)
    lines = sink.getvalue().splitlines()
    assert len(lines) == 2000
    for n in range(4):
        assert [int(line.split()[1]) for line in lines if line.split()[0] == str(n)] == list(range(500))
    assert sink.writers == {"log-writer"}  # never the caller's thread
    assert sink.flushes >= 1


def test_lines_that_come_while_the_writer_lingers_go_out_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer waits ``LINGER_S`` after a batch's first line (here: for ever), so a
    burst is one write; ``close`` ends the wait at once instead of letting it run out."""
    monkeypatch.setattr(log_writer, "LINGER_S", 3600.0)
    writes: list[str] = []

    class Counting(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    writer = LineWriter(Counting())
    for i in range(100):
        writer.write(f"line {i}\n")
    assert writer.close(GUARD_S)  # False (after GUARD_S) if the linger held the writer
    assert writes == ["".join(f"line {i}\n" for i in range(100))]


def test_a_line_written_after_close_goes_straight_to_the_stream() -> None:
    sink = Recorder()
    writer = LineWriter(sink)
    writer.write("first\n")
    assert writer.close(GUARD_S)
    writer.write("late\n")
    assert sink.getvalue() == "first\nlate\n"
    assert threading.current_thread().name in sink.writers
    assert writer.close(GUARD_S)  # twice is harmless


def test_a_reader_that_never_reads_cannot_hold_the_close() -> None:
    read_end, write_end = os.pipe()
    stream = open(write_end, "w", buffering=1)  # noqa: SIM115 (closed below)
    try:
        writer = LineWriter(stream)
        line = "x" * 1000 + "\n"
        for _ in range(200):  # 200 kB: more than a pipe holds (64 kB on Linux)
            writer.write(line)
        assert writer.close(0.2) is False  # gave up: the writer is stuck in write()
        os.close(read_end)  # the stuck write now fails (EPIPE), and the writer goes on
        assert writer.close(GUARD_S)  # ... to the stop it was given, and ends
    finally:
        with contextlib.suppress(OSError):
            os.close(read_end)
        with contextlib.suppress(OSError):
            stream.close()


def test_a_full_queue_waits_for_room_and_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_writer, "MAX_QUEUED", 5)
    release = threading.Event()

    class Held(Recorder):
        def write(self, text: str) -> int:
            release.wait(GUARD_S)  # the reader is behind until the test lets it go
            return super().write(text)

    sink = Held()
    writer = LineWriter(sink)
    producer = threading.Thread(target=lambda: [writer.write(f"{i}\n") for i in range(50)])
    producer.start()
    producer.join(0.2)
    assert producer.is_alive()  # 50 lines cannot fit in 5 places while nothing is written
    release.set()
    producer.join(GUARD_S)
    assert writer.close(GUARD_S)
    assert sink.getvalue().splitlines() == [str(i) for i in range(50)]


def test_a_stuck_reader_costs_dropped_lines_not_a_stuck_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once one line has waited FULL_WAIT_S for room, a line that finds the queue full
    takes the oldest one's place at once; close says how many went, in one last line."""
    monkeypatch.setattr(log_writer, "MAX_QUEUED", 5)
    monkeypatch.setattr(log_writer, "FULL_WAIT_S", 0.05)
    release = threading.Event()

    class Held(Recorder):
        def write(self, text: str) -> int:
            release.wait(GUARD_S)
            return super().write(text)

    sink = Held()
    writer = LineWriter(sink)
    producer = threading.Thread(target=lambda: [writer.write(f"{i}\n") for i in range(50)])
    producer.start()
    producer.join(GUARD_S)
    assert not producer.is_alive()  # 50 lines into 5 places, and it finished: it dropped
    release.set()
    assert writer.close(GUARD_S)
    *kept, last = sink.getvalue().splitlines()
    assert [int(line) for line in kept] == sorted(int(line) for line in kept)
    assert kept[-1] == "49"  # the newest lines are the ones kept (a closing event is one)
    dropped = json.loads(last)
    assert dropped["event"] == "log.dropped" and dropped["lines"] == writer.dropped > 0
    assert len(kept) + writer.dropped == 50


def verbose_plan(seeder: Seeder, registry: LocalRegistry, tmp_path: Path,
                 artifacts: int) -> tuple[list[str], dict[str, str]]:
    """``artifacts`` seeded packages and the command line (and environment) of a `plan`
    over them with JSON logs at debug level: one log line per item."""
    for n in range(artifacts):
        seeder.add_artifact(f"team/app{n:03d}", ["1.0.0"], annotations=package_annotations({}, None))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKUA_", "REGISTRY_"))}
    env["HOME"] = str(tmp_path)
    env.pop("PYTHONUNBUFFERED", None)  # a buffered stderr, as a pip install on a host has
    command = [sys.executable, "-m", "crawler", "plan", "--registry", registry.host, "--plain-http",
               "--no-docker-config", "--log-format", "json", "--state", str(tmp_path / "s.db"), "-v"]
    return command, env


def test_a_plan_piping_json_logs_ends_with_its_closing_event(
    seeder: Seeder, local_registry: LocalRegistry, tmp_path: Path,
) -> None:
    """A real process whose standard error is a pipe: every line out, run.finished last."""
    command, env = verbose_plan(seeder, local_registry, tmp_path, 30)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=GUARD_S, check=False)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line)["event"] for line in done.stderr.splitlines()]
    assert events[-1] == "run.finished" and events.count("run.finished") == 1
    items = [i for i, event in enumerate(events) if event == "item.imported"]  # debug lines in plan
    assert len(items) == 30 and events.index("run.started") < items[0]


@pytest.mark.slow
def test_a_plan_whose_log_reader_never_reads_still_ends(
    seeder: Seeder, local_registry: LocalRegistry, tmp_path: Path,
) -> None:
    """Standard error is a pipe nobody reads: 400 debug lines fill it (64 kB) early on.
    The run still ends, with its own exit status, instead of hanging in a write."""
    command, env = verbose_plan(seeder, local_registry, tmp_path, 400)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        assert process.wait(timeout=GUARD_S * 2) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
