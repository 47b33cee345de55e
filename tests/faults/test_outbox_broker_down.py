"""The catalog keeps working while the broker is down, and its events follow later.

Changes commit together with their events in ``outbox_events``. The relay
sends the events once Redis is back, each exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter

import pytest
from sqlalchemy import func, select

from core.db import new_id, session_factory
from core.outbox import claim_event
from services.catalog.events import SOURCE_STATE
from services.catalog.models import ConsumedEvent, OutboxEvent
from tests.faults.servers import ROOT, free_port, wait_until

# The scenario imports the catalog, runs two inline scans of a small drive and
# relays once while Redis is down. That relay currently gives up after about
# 20 s (measured on a 2-core test machine), and the margin covers load.
SCENARIO_TIMEOUT_S = 150
# An API request that only writes to the database should not wait this long
# on the broker. Publishing a task to a stopped Redis fails within about 1 s
# (measured), because Celery 5's default publish retry policy stops after
# three tries at most 0.2 s apart.
MAX_REQUEST_SECONDS = 10


def run_scenario(drive, redis_server, workdir) -> dict:
    """Run outbox_scenario.py, stopping and starting Redis when it requests."""
    handshake = workdir / "handshake"
    handshake.mkdir()
    result_file = workdir / "result.json"
    log_path = workdir / "scenario.log"
    actions = {"stop-redis": redis_server.stop, "start-redis": redis_server.start}

    env = dict(os.environ, REDIS_URL=redis_server.url)
    command = [
        sys.executable, "-m", "tests.faults.outbox_scenario", "outage",
        str(drive), str(handshake), str(result_file),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT
        )

    try:
        for step, action in actions.items():
            request = handshake / f"{step}.request"
            wait_until(
                lambda request=request: request.exists() or process.poll() is not None,
                SCENARIO_TIMEOUT_S,
                f"the scenario to request {step}",
            )
            if process.poll() is not None:
                break
            action()
            (handshake / f"{step}.done").touch()
        process.wait(SCENARIO_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    output = log_path.read_text(errors="replace")
    assert process.returncode == 0, (
        f"the scenario exited with {process.returncode}:\n{output[-4000:]}"
    )
    return json.loads(result_file.read_text())


class ScanRaisedAfterSuccess(AssertionError):
    """The scan committed its results, then raised because the broker was down."""


@pytest.mark.slow
def test_outbox_delivers_after_broker_outage(drive_factory, redis_server, tmp_path):
    drive = drive_factory("outbox", {"a.jpg": b"a" * 4000, "b.jpg": b"b" * 5000})
    result = run_scenario(drive, redis_server, tmp_path)

    setup = result["with_broker"]
    assert setup["scan_status"] == "succeeded", setup
    assert setup["outbox"]["total"] > 0, setup
    assert setup["outbox"]["unsent"] == setup["outbox"]["total"], setup

    offline = result["without_broker"]
    assert offline["rescan_request"]["status"] == 202, offline
    assert offline["rescan"] == {"status": "succeeded", "moved": 1}, offline
    assert offline["disconnect"]["status"] == 200, offline
    assert offline["disconnect"]["state"] == "offline", offline
    assert offline["show_source"]["status"] == 200, offline
    for step in ("rescan_request", "disconnect", "show_source"):
        assert offline[step]["seconds"] < MAX_REQUEST_SECONDS, (step, offline[step])
    before = offline["outbox_before_relay"]
    assert before["total"] > setup["outbox"]["total"], (
        "the offline changes published nothing"
    )
    assert before["unsent"] == before["total"], before
    relay = offline["relay"]
    assert relay["error"] is not None or relay["sent"] == 0, relay
    assert offline["outbox_after_relay"] == before, offline

    online = result["broker_back"]
    total = before["total"]
    assert online["outbox_before_relay"] == {"total": total, "unsent": total}, online
    assert online["relay"] == {
        "sent": total,
        "error": None,
        "seconds": online["relay"]["seconds"],
    }
    assert online["outbox_after_relay"] == {"total": total, "unsent": 0}, online

    expected = Counter(
        (task, event["id"])
        for event in online["events"]
        for task in event["subscribers"]
    )
    delivered = Counter((m["task"], m["event_id"]) for m in online["messages"])
    assert expected, "no event has a subscriber, so nothing was checked"
    assert delivered == expected
    assert online["second_relay"]["sent"] == 0, online["second_relay"]
    assert online["queue_length_after_second_relay"] == len(online["messages"]), online

    # Checked last and with its own exception, so that the expected failure
    # cannot hide a failure of any check above.
    if offline["rescan_error"] is not None:
        raise ScanRaisedAfterSuccess(offline["rescan_error"])


class RelayBlocked(AssertionError):
    """The relay took too long to give up on an unreachable broker."""


@pytest.mark.slow
def test_relay_fails_fast_without_broker(tmp_path):
    with session_factory("catalog")() as session:
        session.add(
            OutboxEvent(id=new_id(), topic=SOURCE_STATE, payload={"state": "online"})
        )
        session.commit()
    result_file = tmp_path / "result.json"
    # Nothing listens on this port, so every connection to the broker is refused.
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.faults.outbox_scenario",
            "relay",
            str(result_file),
        ],
        check=False,
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    result = json.loads(result_file.read_text())

    assert result["before"] == {"total": 1, "unsent": 1}, result
    relay = result["relay"]
    assert relay["error"] is not None or relay["sent"] == 0, relay
    assert result["after"] == {"total": 1, "unsent": 1}, result

    # Checked last and with its own exception, so that the expected failure
    # cannot hide a failure of any check above.
    if relay["seconds"] >= MAX_REQUEST_SECONDS:
        raise RelayBlocked(
            f"the relay gave up after {relay['seconds']} s: {relay['error']}"
        )


def test_consumed_event_applies_once():
    """A redelivered event is claimed once, even by two transactions at the same time."""
    make_session = session_factory("catalog")
    event_id = new_id()
    applied = []

    def consume() -> bool:
        with make_session() as session:
            if not claim_event(session, ConsumedEvent, event_id):
                return False
            applied.append(event_id)
            session.commit()
            return True

    assert consume() is True
    assert consume() is False
    assert applied == [event_id]

    # Two consumers of one new event: the second blocks on the first's
    # uncommitted row, then gets a unique-key violation once the first commits.
    event_id = new_id()
    first = make_session()
    assert claim_event(first, ConsumedEvent, event_id) is True
    outcome = {}

    def second_consumer():
        with make_session() as session:
            outcome["claimed"] = claim_event(session, ConsumedEvent, event_id)
            session.commit()

    thread = threading.Thread(target=second_consumer)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive(), "the second claim did not wait for the first transaction"
    first.commit()
    first.close()
    thread.join(10)
    assert not thread.is_alive(), (
        "the second claim still waits after the first committed"
    )
    assert outcome == {"claimed": False}

    with make_session() as session:
        rows = session.scalar(
            select(func.count())
            .select_from(ConsumedEvent)
            .where(ConsumedEvent.event_id == event_id)
        )
    assert rows == 1
