import duckdb
import pytest

from pipeline.activation.crm import upsert_inputs
from pipeline.activation.outbox import pending, plan, run_sync
from pipeline.activation.syncs import SyncSpec

SPEC = SyncSpec(
    name="contacts",
    description="",
    model="dim",
    destination="crm_contacts",
    primary_key="id",
    mode="upsert",
    fields={"email": "email", "ltv": "ltv_property"},
)


def payload(rows):
    return {"inputs": list(upsert_inputs(rows, SPEC.primary_key, SPEC.fields, "ext_id"))}


@pytest.fixture
def conn():
    with duckdb.connect(":memory:") as c:
        c.execute(
            "CREATE TABLE dim AS SELECT i AS id, 'c' || i || '@x.io' AS email, i * 1.5 AS ltv, 'x' AS unmapped"
            " FROM range(1, 251) t(i)"
        )
        yield c


def run(conn, plan_id, sent, fail_on=None, **kw):
    def send(batch):
        if fail_on is not None and batch.batch_no == fail_on:
            raise ConnectionError("destination went away")
        sent.append(batch)

    return run_sync(conn, SPEC, "dim", plan_id, payload, 100, send, **kw).counts


def test_first_run_sends_everything_and_an_unchanged_rerun_sends_nothing(conn):
    sent = []
    counts = run(conn, "p1", sent)
    assert (counts.adds, counts.changes, counts.planned) == (250, 0, 250)
    assert [len(b.payload["inputs"]) for b in sent] == [100, 100, 50]
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
    counts, _ = plan(conn, SPEC, "dim", "p2", payload, 100)
    assert counts.deletes == 10
    sent = []
    counts = run(conn, "p3", sent, full_resync=True)
    assert counts.changes == 240


def test_a_dry_run_and_a_refused_plan_write_nothing(conn):
    run(conn, "p1", [])
    conn.execute("UPDATE dim SET email = 'z' || id WHERE id <= 3")
    counts, sample = plan(conn, SPEC, "dim", "p2", payload, 100, dry_run=True)
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
        plan(conn, SPEC, "dim", "p3", payload, 100, approve=refuse)
    assert pending(conn, "contacts") == []
