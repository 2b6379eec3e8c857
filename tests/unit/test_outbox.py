import dataclasses
import threading
import time

import duckdb
import pytest

from pipeline.activation.destinations.crm_contacts import CrmDestination
from pipeline.activation.journal import open_journal
from pipeline.activation.outbox import (
    REJECTED,
    apply_acknowledged,
    hand_over,
    idempotency_key,
    mark_sent,
    pending,
    plan,
    prepare,
    run_sync,
    send_pending,
)
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
def journal():
    with open_journal(":memory:") as j:
        yield j


@pytest.fixture
def conn(journal):
    with duckdb.connect(":memory:") as c:
        c.execute(
            "CREATE TABLE dim AS SELECT i AS id, 'c' || i || '@x.io' AS email, i * 1.5 AS ltv, 'x' AS unmapped"
            " FROM range(1, 251) t(i)"
        )
        yield c


def run(conn, journal, plan_id, sent, fail_on=None, spec=SPEC, **kw):
    destination = FakeDestination(fail_on)
    destination.sent = sent
    return run_sync(conn, journal, spec, "dim", plan_id, destination, **kw).counts


def test_first_run_sends_everything_and_an_unchanged_rerun_sends_nothing(conn, journal):
    sent = []
    counts = run(conn, journal, "p1", sent)
    assert (counts.adds, counts.changes, counts.planned) == (250, 0, 250)
    assert [len(b.payload["inputs"]) for b in sent] == [100, 100, 50]
    assert [b.idempotency_key for b in sent] == [idempotency_key("contacts", "p1", n) for n in range(3)]
    assert sent[0].payload["inputs"][0] == {
        "idProperty": "ext_id",
        "id": "1",
        "properties": {"email": "c1@x.io", "ltv_property": "1.5"},
    }
    again = []
    counts = run(conn, journal, "p2", again)
    assert (counts.planned, counts.unchanged, again) == (0, 250, [])


def test_only_changed_mapped_fields_are_sent(conn, journal):
    run(conn, journal, "p1", [])
    conn.execute("UPDATE dim SET email = 'new' || id || '@x.io' WHERE id % 100 = 0")  # 1 % of the rows
    conn.execute("UPDATE dim SET unmapped = 'y' WHERE id < 50")  # not mapped: no change to send
    sent = []
    counts = run(conn, journal, "p2", sent)
    assert (counts.changes, counts.adds) == (2, 0)
    assert sorted(i["id"] for b in sent for i in b.payload["inputs"]) == ["100", "200"]


def test_a_crash_mid_sync_leaves_only_the_remaining_batches(conn, journal):
    sent = []
    with pytest.raises(ConnectionError):
        run(conn, journal, "p1", sent, fail_on=1)
    assert [b.batch_no for b in sent] == [0]
    assert [b.batch_no for b in pending(conn, "contacts")] == [1, 2]
    resumed = []
    # Next run: its plan leaves p1's records in flight alone (nothing new), its send finishes p1's batches.
    counts = run(conn, journal, "p2", resumed)
    assert [(b.plan_id, b.batch_no) for b in resumed] == [("p1", 1), ("p1", 2)]
    assert (counts.planned, counts.unchanged, counts.in_flight) == (0, 100, 150)
    assert pending(conn, "contacts") == []
    assert run(conn, journal, "p3", []).unchanged == 250


def test_deletes_are_counted_and_full_resync_sends_all(conn, journal):
    run(conn, journal, "p1", [])
    conn.execute("DELETE FROM dim WHERE id > 240")
    counts, _ = plan(conn, SPEC, "dim", "p2", FakeDestination())
    assert counts.deletes == 10
    sent = []
    counts = run(conn, journal, "p3", sent, full_resync=True)
    assert counts.changes == 240


def test_a_dry_run_and_a_refused_plan_write_nothing(conn, journal):
    run(conn, journal, "p1", [])
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


def test_refused_records_are_kept_skipped_while_unchanged_and_retried_once_changed(conn, journal):
    conn.execute("UPDATE dim SET email = 'not-an-email' WHERE id IN (7, 8)")
    sent = []
    counts = run(conn, journal, "p1", sent)
    assert counts.adds == 250
    assert conn.execute(f"SELECT record_key, error FROM {REJECTED} ORDER BY 1").fetchall() == [
        ("7", "INVALID_EMAIL"),
        ("8", "INVALID_EMAIL"),
    ]
    again = []
    counts = run(conn, journal, "p2", again)
    assert (counts.planned, counts.skipped, counts.unchanged, again) == (0, 2, 248, []), "not resent while unchanged"

    conn.execute("UPDATE dim SET email = 'fixed@x.io' WHERE id = 7")
    fixed = []
    counts = run(conn, journal, "p3", fixed)
    assert (counts.adds, counts.skipped) == (1, 1)
    assert [i["id"] for b in fixed for i in b.payload["inputs"]] == ["7"]
    assert conn.execute(f"SELECT record_key FROM {REJECTED}").fetchall() == [("8",)]
    assert run(conn, journal, "p4", [], full_resync=True).changes == 249, "a full resync tries the refused record too"


def test_mirror_mode_sends_deletes_and_forgets_them(conn, journal):
    mirror = dataclasses.replace(SPEC, mode="mirror")
    run(conn, journal, "p1", [], spec=mirror)
    conn.execute("DELETE FROM dim WHERE id > 245")
    sent = []
    counts = run(conn, journal, "p2", sent, spec=mirror)
    assert counts.deletes == 5
    assert [(b.op, b.payload) for b in sent] == [("delete", {"ids": ["246", "247", "248", "249", "250"]})]
    assert run(conn, journal, "p3", [], spec=mirror).planned == 0, "a delete acknowledged is not sent again"
    # Upsert mode counts records that left the model but never deletes them.
    conn.execute("DELETE FROM dim WHERE id > 240")
    upsert_sent = []
    assert run(conn, journal, "p4", upsert_sent).deletes == 5 and upsert_sent == []


def test_batches_go_out_concurrently_and_a_failure_leaves_the_rest_pending(conn, journal):
    conn.execute("INSERT INTO dim SELECT i, 'c' || i || '@x.io', 1, 'x' FROM range(251, 1001) t(i)")
    plan(conn, SPEC, "dim", "p1", FakeDestination())
    hand_over(conn, journal, "contacts")
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
        send_pending(journal, deliver, concurrency=3)
    assert peak == 3, "bounded: never more than 3 batches in flight, and more than one at once"
    apply_acknowledged(conn, journal, "contacts")
    left = [b.batch_no for b in pending(conn, "contacts")]
    assert 4 in left and len(left) < 10, "acknowledged batches are marked, the failed one and the rest stay"
    assert [b.batch_no for b in journal.unacknowledged()] == left
    done = send_pending(journal, lambda b: Delivery(accepted=len(b.record_keys)), concurrency=3)
    apply_acknowledged(conn, journal, "contacts")
    assert len(done) == len(left) and pending(conn, "contacts") == []
    assert conn.execute("SELECT count(*) FROM activation.sync_state").fetchone()[0] == 1000


def test_acknowledgements_are_journaled_in_groups_and_promptly_when_batches_are_slow(conn, tmp_path, monkeypatch):
    from pipeline.activation import outbox

    conn.execute("INSERT INTO dim SELECT i, 'c' || i || '@x.io', 1, 'x' FROM range(251, 801) t(i)")
    plan(conn, SPEC, "dim", "p1", FakeDestination())
    with open_journal(tmp_path / "j.sqlite") as journal:
        hand_over(conn, journal, "contacts")
        commits = []
        record = journal.record
        monkeypatch.setattr(journal, "record", lambda acks: (commits.append(len(acks)), record(acks)))

        # Fast batches: one durable commit per group of RECORD_EVERY, not one per acknowledgement.
        monkeypatch.setattr(outbox, "RECORD_EVERY", 3)
        send_pending(journal, lambda b: Delivery(accepted=len(b.record_keys)), batches=journal.unacknowledged()[:6])
        assert [c for c in commits if c] == [3, 3]

        # Slow batches: a group is journaled once RECORD_AFTER_SECONDS passed, while the next batch is in flight,
        # so a send killed now would resend at most that one. Seen from another connection, as after a kill.
        monkeypatch.setattr(outbox, "RECORD_EVERY", 100)
        monkeypatch.setattr(outbox, "RECORD_AFTER_SECONDS", 0.05)
        seen = []

        def slow(batch):
            time.sleep(0.4)
            with open_journal(tmp_path / "j.sqlite") as other:
                seen.append((batch.batch_no, {b.batch_no for b, _ in other.acknowledged()}))
            return Delivery(accepted=len(batch.record_keys))

        send_pending(journal, slow)
    assert [n for n, _ in seen] == [6, 7], "the two batches left"
    assert seen[1][1] == set(range(7)), "batch 6 was journaled while batch 7 was being sent"


def test_a_plan_while_an_earlier_send_is_in_flight_neither_doubles_nor_loses_a_record(conn, journal):
    # Run 1 planned three batches; its send has had batch 0 acknowledged and is still sending 1 and 2.
    prepare(conn, journal, SPEC, "dim", "p1", FakeDestination())
    first = FakeDestination()
    [(batch0, delivery0)] = [(b, first.deliver(b)) for b in journal.unacknowledged()[:1]]
    journal.record([(batch0, delivery0)])
    acked, flying = batch0.record_keys[0], journal.unacknowledged()[0].record_keys[0]
    # Meanwhile records change: one in the acknowledged batch, one in a batch in flight, and a new one.
    conn.execute("UPDATE dim SET email = 'v2-' || email WHERE CAST(id AS VARCHAR) IN (?, ?)", [acked, flying])
    conn.execute("INSERT INTO dim VALUES (251, 'c251@x.io', 1, 'x')")
    counts, _ = prepare(conn, journal, SPEC, "dim", "p2", FakeDestination())  # run 2's plan
    assert (counts.adds, counts.changes, counts.in_flight) == (1, 1, 150), "a batch in flight: not planned"
    assert [b.batch_no for b in pending(conn, "contacts") if b.plan_id == "p1"] == [1, 2], "batch 0 was applied"

    # Run 1's send finishes (its pool keeps run 2's send waiting), run 1 acknowledges; then run 2 sends.
    rest = send_pending(journal, first.deliver, journal.unacknowledged()[:2])
    apply_acknowledged(conn, journal, "contacts")
    second = FakeDestination()
    send_pending(journal, second.deliver)
    apply_acknowledged(conn, journal, "contacts")
    assert [(b.plan_id, b.batch_no) for b, _ in rest] == [("p1", 1), ("p1", 2)]
    assert [(b.plan_id, b.record_keys) for b in second.sent] == [("p2", sorted([acked, "251"]))], "nothing twice"
    keys = [k for b in first.sent + second.sent for k in b.record_keys]
    assert sorted(set(keys), key=int) == [str(i) for i in range(1, 252)], "nothing lost"
    # `flying` was sent with its old email (planned before it changed): the next plan sends its change.
    counts, _ = prepare(conn, journal, SPEC, "dim", "p3", FakeDestination())
    assert (counts.changes, counts.in_flight, counts.unchanged) == (1, 0, 250)


def test_applying_an_acknowledgement_twice_changes_nothing(conn, journal):
    conn.execute("UPDATE dim SET email = 'not-an-email' WHERE id = 7")
    prepare(conn, journal, SPEC, "dim", "p1", FakeDestination())
    send_pending(journal, FakeDestination().deliver)
    acknowledged = journal.acknowledged()
    assert len(mark_sent(conn, "contacts", acknowledged)) == 3
    # A crash here (warehouse marked, journal not yet told) means the next apply sees the same acknowledgements.
    assert len(apply_acknowledged(conn, journal, "contacts")) == 3 and journal.acknowledged() == []
    assert conn.execute("SELECT count(*) FROM activation.sync_state").fetchone()[0] == 249
    assert conn.execute(f"SELECT count(*) FROM {REJECTED}").fetchone()[0] == 1


def test_batches_planned_but_not_handed_over_are_handed_over_by_the_next_plan(conn, journal):
    plan(conn, SPEC, "dim", "p1", FakeDestination())  # a crash right after the plan's commit
    assert journal.unacknowledged() == []
    counts, _ = prepare(conn, journal, SPEC, "dim", "p2", FakeDestination())
    assert (counts.planned, counts.in_flight) == (0, 250)
    assert [(b.plan_id, b.batch_no) for b in journal.unacknowledged()] == [("p1", 0), ("p1", 1), ("p1", 2)]
