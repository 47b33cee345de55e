"""The broker-down scenario, run in its own process by test_outbox_broker_down.

Usage:
  ``python -m tests.faults.outbox_scenario outage DRIVE HANDSHAKE_DIR RESULT_FILE``
  ``python -m tests.faults.outbox_scenario relay RESULT_FILE``

The Celery app binds its broker URL when it is imported, so the scenario runs
in a process whose ``REDIS_URL`` names the test's private Redis. The test
owns that Redis: when the scenario needs it stopped or started, it creates
``<step>.request`` in HANDSHAKE_DIR and waits for the test to create
``<step>.done``. The scenario writes what it observed to RESULT_FILE as JSON,
and the test makes every assertion.

The ``relay`` mode only relays the catalog's outbox once and records the
outcome, for a test that points ``REDIS_URL`` at a port with no server.

Steps of the ``outage`` mode:
  1. With Redis up: create an organization, connect the drive, scan it inline.
  2. With Redis stopped: move a file, rescan inline, disconnect, relay once.
  3. With Redis started again: relay, read the queued messages, relay again.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

EVENTS_QUEUE = "events"
HANDSHAKE_TIMEOUT_S = 60


class ApiClient:
    """A Flask test client that sends one member's bearer token."""

    def __init__(self, client, token: str):
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path, **kwargs):
        return self.client.get(path, headers=self.headers, **kwargs)

    def post(self, path, **kwargs):
        return self.client.post(path, headers=self.headers, **kwargs)


def ask_test(handshake: Path, step: str) -> None:
    """Ask the test to perform ``step`` and wait until it has."""
    (handshake / f"{step}.request").touch()
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
    while not (handshake / f"{step}.done").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the test did not perform {step!r} within {HANDSHAKE_TIMEOUT_S} s"
            )
        time.sleep(0.05)


def describe(error: Exception) -> str:
    return f"{type(error).__module__}.{type(error).__name__}: {error}"


def outbox_counts() -> dict:
    from core.db import session_scope
    from services.catalog.models import OutboxEvent

    with session_scope("catalog") as session:
        total = session.scalar(select(func.count(OutboxEvent.seq)))
        unsent = session.scalar(
            select(func.count(OutboxEvent.seq)).where(OutboxEvent.sent_at.is_(None))
        )
    return {"total": total, "unsent": unsent}


def timed(call):
    started = time.monotonic()
    response = call()
    return response, round(time.monotonic() - started, 3)


def relay_once() -> dict:
    from workers.tasks.outbox import relay

    started = time.monotonic()
    try:
        sent, error = relay("catalog"), None
    except Exception as caught:  # noqa: BLE001 - the test asserts on any failure
        sent, error = None, describe(caught)
    return {
        "sent": sent,
        "error": error,
        "seconds": round(time.monotonic() - started, 3),
    }


def with_broker(client, drive: Path) -> dict:
    from tests.catalog.helpers import connect, run_active_scan

    response = client.post(
        "/api/v1/orgs",
        json={"name": "Outbox", "email": f"owner-{uuid.uuid4().hex[:6]}@example.com"},
        headers={"X-Internal-Secret": os.environ["INTERNAL_SECRET"]},
    )
    assert response.status_code == 201, response.json
    member = ApiClient(client, response.json["token"])
    source = connect(member, drive)
    scan = run_active_scan(member, source)
    return {
        "token": response.json["token"],
        "source_id": source["id"],
        "scan_status": scan["status"],
        "outbox": outbox_counts(),
    }


def without_broker(member: ApiClient, drive: Path, source_id: str) -> dict:
    from workers.tasks.scans import run_scan

    observed = {}
    (drive / "moved").mkdir()
    (drive / "a.jpg").rename(drive / "moved" / "a.jpg")
    response, seconds = timed(lambda: member.post(f"/api/v1/sources/{source_id}/scans"))
    observed["rescan_request"] = {"status": response.status_code, "seconds": seconds}
    scan_id = member.get(f"/api/v1/sources/{source_id}").json["active_scan"]["id"]
    try:
        run_scan(scan_id)
        observed["rescan_error"] = None
    except Exception as error:  # noqa: BLE001 - the test asserts on any failure
        observed["rescan_error"] = describe(error)
    scan = member.get(f"/api/v1/scans/{scan_id}").json
    observed["rescan"] = {
        "status": scan["status"],
        "moved": scan["counts"].get("moved"),
    }
    response, seconds = timed(
        lambda: member.post(f"/api/v1/sources/{source_id}/disconnect")
    )
    observed["disconnect"] = {
        "status": response.status_code,
        "seconds": seconds,
        "state": (response.json or {}).get("state"),
    }
    response, seconds = timed(lambda: member.get(f"/api/v1/sources/{source_id}"))
    observed["show_source"] = {"status": response.status_code, "seconds": seconds}
    observed["outbox_before_relay"] = outbox_counts()
    observed["relay"] = relay_once()
    observed["outbox_after_relay"] = outbox_counts()
    return observed


def events_queue_key() -> str:
    """Return the Redis key of the events queue's list, including any key prefix."""
    from core.celery_app import celery_app

    options = celery_app.conf.broker_transport_options or {}
    return (options.get("global_keyprefix") or "") + EVENTS_QUEUE


def queued_messages() -> list[dict]:
    """Decode every Celery message waiting in the events queue."""
    import redis

    connection = redis.Redis.from_url(os.environ["REDIS_URL"])
    messages = []
    for raw in connection.lrange(events_queue_key(), 0, -1):
        envelope = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        messages.append(
            {"task": envelope["headers"]["task"], "event_id": args[0]["id"]}
        )
    return messages


def broker_back() -> dict:
    import redis

    from core import outbox
    from core.db import session_scope
    from services.catalog.models import OutboxEvent

    observed = {"outbox_before_relay": outbox_counts(), "relay": relay_once()}
    observed["outbox_after_relay"] = outbox_counts()
    observed["messages"] = queued_messages()
    with session_scope("catalog") as session:
        events = session.execute(select(OutboxEvent.id, OutboxEvent.topic)).all()
    observed["events"] = [
        {
            "id": event_id,
            "topic": topic,
            "subscribers": outbox.SUBSCRIBERS.get(topic, []),
        }
        for event_id, topic in events
    ]
    observed["second_relay"] = relay_once()
    connection = redis.Redis.from_url(os.environ["REDIS_URL"])
    observed["queue_length_after_second_relay"] = connection.llen(events_queue_key())
    return observed


def run_outage(drive: str, handshake: str, result_file: str) -> None:
    # Importing the tasks registers every event consumer in SUBSCRIBERS.
    import workers.tasks  # noqa: F401
    from services.catalog.app import create_app

    drive_path, handshake_path = Path(drive), Path(handshake)
    app = create_app()
    app.config["TESTING"] = True
    client = app.test_client()
    result = {"with_broker": with_broker(client, drive_path)}
    member = ApiClient(client, result["with_broker"]["token"])
    ask_test(handshake_path, "stop-redis")
    result["without_broker"] = without_broker(
        member, drive_path, result["with_broker"]["source_id"]
    )
    ask_test(handshake_path, "start-redis")
    result["broker_back"] = broker_back()
    Path(result_file).write_text(json.dumps(result, indent=2))


def run_relay(result_file: str) -> None:
    import workers.tasks  # noqa: F401

    result = {
        "before": outbox_counts(),
        "relay": relay_once(),
        "after": outbox_counts(),
    }
    Path(result_file).write_text(json.dumps(result, indent=2))


MODES = {"outage": run_outage, "relay": run_relay}


if __name__ == "__main__":
    MODES[sys.argv[1]](*sys.argv[2:])
