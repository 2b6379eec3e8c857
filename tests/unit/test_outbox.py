import dataclasses
import threading
import time

import duckdb
import pytest

from pipeline.activation.destinations import CrmDestination
from pipeline.activation.outbox import REJECTED, idempotency_key, pending, plan, run_sync, send_pending
from pipeline.activation.syncs import SyncSpec
from pipeline.core.transport import Delivery

SPEC = SyncSpec(
    name="contacts",
    description="",
    model="dim",
    destination="crm_contacts",
    primary_key="id",
    mode="upsert",
    fields={"email": "email", "ltv": "ltv_property"},
)


class FakeDestination(CrmDestination):
    """The CRM's batch shapes; records delivered batches and refuses records whose email has no '@' (like the
    CRM's INVALID_EMAIL)."""

    def __init__(self, fail_on=None, concurrency=1):
        super().__init__(None, None, SPEC, "ext_id", 100, concurrency)
        self.sent, self.fail_on = [], fail_on

    def deliver(self, batch):
        if self.fail_on is not None and batch.batch_no == self.fail_on:
            raise ConnectionError("destination went away")
        self.sent.append(batch)
        inputs = batch.payload.get("inputs", [])
        refused = {i: "INVALID_EMAIL" for i, item in enumerate(inputs) if "@" not in item["properties"]["email"]}
        return Delivery(accepted=len(batch.record_keys) - len(refused), rejected=refused)


@pytest.fixture
def conn():
    with duckdb.connect(":memory:") as c:
        c.execute(
            "CREATE TABLE dim AS SELECT i AS id, 'c' || i || '@x.io' AS email, i * 1.5 AS ltv, 'x' AS unmapped"
            " FROM range(1, 251) t(i)"
        )
        yield c


def run(conn, plan_id, sent, fail_on=None, spec=SPEC, **kw):
    destination = FakeDestination(fail_on)
    destination.sent = sent
    return run_sync(conn, spec, "dim", plan_id, destination, **kw).counts


def test_first_run_sends_everything_and_an_unchanged_rerun_sends_nothing(conn):
    sent = []
    counts = run(conn, "p1", sent)
    assert (counts.adds, counts.changes, counts.planned) == (250, 0, 250)
    assert [len(b.payload["inputs"]) for b in sent] == [100, 100, 50]
    assert [b.idempotency_key for b in sent] == [idempotency_key("contacts", "p1", n) for n in range(3)]
    assert sent[0].payload["inputs"][0] == {
        "idProperty": "ext_id",
        "id": "1",
        "properties": {"email": "c1@x.io", "ltv_property": "1.5"},
    }
    again = []
    counts = run(conn, "p2", again)
    assert (counts.planned, counts.unchanged, again) == (0, 250, [])


def test_only_changed_mapped_fields_are_sent(conn):
    run(conn, "p1", [])
    conn.execute("UPDATE dim SET email = 'new' || id || '@x.io' WHERE id % 100 = 0")  # 1 % of the rows
    conn.execute("UPDATE dim SET unmapped = 'y' WHERE id < 50")  # not mapped: no change to send
    sent = []
    counts = run(conn, "p2", sent)
    assert (counts.changes, counts.adds) == (2, 0)
    assert sorted(i["id"] for b in sent for i in b.payload["inputs"]) == ["100", "200"]


def test_a_crash_mid_sync_leaves_only_the_remaining_batches(conn):
    sent = []
    with pytest.raises(ConnectionError):
        run(conn, "p1", sent, fail_on=1)
    assert [b.batch_no for b in sent] == [0]
    assert [b.batch_no for b in pending(conn, "contacts")] == [1, 2]
    resumed = []
    counts = run(conn, "p2", resumed)  # next run: finish p1's batches first, then diff: nothing new
    assert [(b.plan_id, b.batch_no) for b in resumed] == [("p1", 1), ("p1", 2)]
    assert (counts.planned, counts.unchanged) == (0, 250)
    assert pending(conn, "contacts") == []


def test_deletes_are_counted_and_full_resync_sends_all(conn):
    run(conn, "p1", [])
    conn.execute("DELETE FROM dim WHERE id > 240")
    counts, _ = plan(conn, SPEC, "dim", "p2", FakeDestination())
    assert counts.deletes == 10
    sent = []
    counts = run(conn, "p3", sent, full_resync=True)
    assert counts.changes == 240


def test_a_dry_run_and_a_refused_plan_write_nothing(conn):
    run(conn, "p1", [])
    conn.execute("UPDATE dim SET email = 'z' || id WHERE id <= 3")
    counts, sample = plan(conn, SPEC, "dim", "p2", FakeDestination(), dry_run=True)
    assert counts.changes == 3 and sample == [
        {"key": "1", "op": "change"},
        {"key": "2", "op": "change"},
        {"key": "3", "op": "change"},
    ]
    assert pending(conn, "contacts") == []

    def refuse(counts, state_rows):
        assert state_rows == 250
        raise RuntimeError("too much")

    with pytest.raises(RuntimeError):
        plan(conn, SPEC, "dim", "p3", FakeDestination(), approve=refuse)
    assert pending(conn, "contacts") == []


def test_refused_records_are_kept_skipped_while_unchanged_and_retried_once_changed(conn):
    conn.execute("UPDATE dim SET email = 'not-an-email' WHERE id IN (7, 8)")
    sent = []
    counts = run(conn, "p1", sent)
    assert counts.adds == 250
    assert conn.execute(f"SELECT record_key, error FROM {REJECTED} ORDER BY 1").fetchall() == [
        ("7", "INVALID_EMAIL"),
        ("8", "INVALID_EMAIL"),
    ]
    again = []
    counts = run(conn, "p2", again)
    assert (counts.planned, counts.skipped, counts.unchanged, again) == (0, 2, 248, []), "not resent while unchanged"

    conn.execute("UPDATE dim SET email = 'fixed@x.io' WHERE id = 7")
    fixed = []
    counts = run(conn, "p3", fixed)
    assert (counts.adds, counts.skipped) == (1, 1)
    assert [i["id"] for b in fixed for i in b.payload["inputs"]] == ["7"]
    assert conn.execute(f"SELECT record_key FROM {REJECTED}").fetchall() == [("8",)]
    assert run(conn, "p4", [], full_resync=True).changes == 249, "a full resync tries the refused record too"


def test_mirror_mode_sends_deletes_and_forgets_them(conn):
    mirror = dataclasses.replace(SPEC, mode="mirror")
    run(conn, "p1", [], spec=mirror)
    conn.execute("DELETE FROM dim WHERE id > 245")
    sent = []
    counts = run(conn, "p2", sent, spec=mirror)
    assert counts.deletes == 5
    assert [(b.op, b.payload) for b in sent] == [("delete", {"ids": ["246", "247", "248", "249", "250"]})]
    assert run(conn, "p3", [], spec=mirror).planned == 0, "a delete acknowledged is not sent again"
    # Upsert mode counts records that left the model but never deletes them.
    conn.execute("DELETE FROM dim WHERE id > 240")
    upsert_sent = []
    assert run(conn, "p4", upsert_sent).deletes == 5 and upsert_sent == []


def test_batches_go_out_concurrently_and_a_failure_leaves_the_rest_pending(conn):
    conn.execute("INSERT INTO dim SELECT i, 'c' || i || '@x.io', 1, 'x' FROM range(251, 1001) t(i)")
    plan(conn, SPEC, "dim", "p1", FakeDestination())
    in_flight, peak, lock = 0, 0, threading.Lock()

    def deliver(batch):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        if batch.batch_no == 4:
            raise ConnectionError("gone")
        return Delivery(accepted=len(batch.record_keys))

    with pytest.raises(ConnectionError):
        send_pending(conn, "contacts", deliver, concurrency=3)
    assert peak == 3, "bounded: never more than 3 batches in flight, and more than one at once"
    left = [b.batch_no for b in pending(conn, "contacts")]
    assert 4 in left and len(left) < 10, "acknowledged batches are marked, the failed one and the rest stay"
    done = send_pending(conn, "contacts", lambda b: Delivery(accepted=len(b.record_keys)), concurrency=3)
    assert len(done) == len(left) and pending(conn, "contacts") == []
    assert conn.execute("SELECT count(*) FROM activation.sync_state").fetchone()[0] == 1000
