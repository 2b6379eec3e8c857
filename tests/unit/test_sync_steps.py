"""The sync's step logic without Dagster: gates, approval, classification of a failed send, dry run, metadata."""

import dagster as dg
import httpx
import pytest

from pipeline.activation.destinations.crm_contacts import CrmResource
from pipeline.activation.gates import UpstreamFacts
from pipeline.activation.journal import open_journal
from pipeline.activation.outbox import REJECTED, DiffCounts, SyncOutcome, pending, rejected_sample
from pipeline.activation.steps import (
    Sent,
    SyncConfig,
    acknowledge_sync,
    approval,
    dry_run_metadata,
    input_failure,
    plan_sync,
    send_failure,
    sync_metadata,
)
from pipeline.activation.syncs import ResolvedSync, load_syncs
from pipeline.core.resources import WarehouseResource
from pipeline.core.transport import (
    Delivery,
    TerminalHTTPError,
    TransientHTTPError,
    is_transient,
    raise_for_error,
)
from tests.marts import make_dim_customers

SPEC = next(s for s in load_syncs() if s.name == "crm_contacts_sync")
SYNC = ResolvedSync(SPEC, dg.AssetKey("dim_customers"), "dim_customers")
CRM = CrmResource(base_url="http://127.0.0.1:9", token="t")  # the plan shapes batches; it never connects
FRESH = UpstreamFacts(failed_checks=[], model_materialized_at=None, upstream={})


class Log:
    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(("info", msg))

    def warning(self, msg):
        self.lines.append(("warning", msg))


def answer(status: int) -> httpx.Response:
    return httpx.Response(status, text="no", request=httpx.Request("POST", "http://crm/batch"))


@pytest.mark.parametrize(("status", "error"), [(429, TransientHTTPError), (503, TransientHTTPError)])
def test_rate_limits_and_server_errors_are_transient(status, error):
    with pytest.raises(error) as raised:
        raise_for_error(answer(status), "CRM answered")
    assert is_transient(raised.value) and send_failure(raised.value, SPEC) is None, "left to the retry policy"


def test_other_client_errors_are_terminal_and_fail_the_step_without_retries():
    with pytest.raises(TerminalHTTPError) as raised:
        raise_for_error(answer(401), "CRM answered 401")
    assert not is_transient(raised.value)
    failure = send_failure(raised.value, SPEC)
    assert isinstance(failure, dg.Failure) and not failure.allow_retries
    assert "crm_contacts refused the sync: CRM answered 401" in failure.description
    assert is_transient(httpx.ConnectTimeout("slow")), "a timeout heals by waiting"
    raise_for_error(answer(200), "fine")  # a 2xx raises nothing


def test_input_gates_refuse_unless_forced():
    assert input_failure([], force=False) is None
    assert input_failure(["stale"], force=True) is None
    failure = input_failure(["stale"], force=False)
    assert failure.description.startswith("Sync refused: stale. Nothing was sent") and not failure.allow_retries


def test_approval_refuses_a_large_change_unless_forced_or_a_full_resync():
    counts = DiffCounts(adds=0, changes=600, deletes=0, unchanged=400)
    with pytest.raises(dg.Failure, match=r"600 of 1000 records would change \(60%\)"):
        approval(SPEC, SyncConfig())(counts, 1000)
    approval(SPEC, SyncConfig(force=True))(counts, 1000)
    approval(SPEC, SyncConfig(full_resync=True))(counts, 1000)
    in_flight = DiffCounts(adds=0, changes=100, deletes=0, unchanged=0, in_flight=900)
    approval(SPEC, SyncConfig())(in_flight, 1000)  # records in flight count towards the total, not the change


def test_plan_refuses_failed_checks_and_a_missing_model_before_writing(tmp_path):
    warehouse = WarehouseResource(path=str(tmp_path / "w.duckdb"))
    failed = UpstreamFacts(failed_checks=["dim_customers:emails_present"], model_materialized_at=None, upstream={})
    with pytest.raises(dg.Failure, match="blocking check"):
        plan_sync(SYNC, warehouse, CRM, "p1", failed, SyncConfig(), Log())
    with pytest.raises(dg.Failure, match="has not been built there yet"):
        plan_sync(SYNC, warehouse, CRM, "p1", FRESH, SyncConfig(), Log())


def test_a_dry_run_plans_and_hands_over_nothing(tmp_path):
    make_dim_customers(tmp_path / "w.duckdb", 30)
    warehouse = WarehouseResource(path=str(tmp_path / "w.duckdb"))
    log = Log()
    planned = plan_sync(SYNC, warehouse, CRM, "p1", FRESH, SyncConfig(dry_run=True), log)
    assert planned.dry_run and planned.counts.adds == 30 and len(planned.sample) == 20
    with warehouse.connect() as conn:
        assert pending(conn, SPEC.name) == []
    with open_journal(planned.journal) as journal:
        assert journal.unacknowledged() == []
    meta = acknowledge_sync(planned, Sent(0, 0.0), SPEC, warehouse, CRM.base_url, log)
    assert meta["dry_run"] is True and (meta["planned"], meta["sent"]) == (30, 0)
    assert log.lines[-1] == (
        "info",
        "Dry run: would send 30 records (30 new, 0 changed, 0 gone, not deleted in upsert mode)",
    )
    assert meta == dry_run_metadata(planned.counts, planned.sample) | {"sample": meta["sample"]}


def test_acknowledge_applies_the_journal_and_reports_refused_records(tmp_path):
    make_dim_customers(tmp_path / "w.duckdb", 150)
    warehouse = WarehouseResource(path=str(tmp_path / "w.duckdb"))
    planned = plan_sync(SYNC, warehouse, CRM, "p1", FRESH, SyncConfig(), Log())
    with open_journal(planned.journal) as journal:
        first, second = journal.unacknowledged()
        journal.record([(first, Delivery(accepted=99, rejected={3: "INVALID_EMAIL"}, created=99))])
        journal.record([(second, Delivery(accepted=50, created=50))])
    log = Log()
    meta = acknowledge_sync(planned, Sent(retries=2, seconds=1.0), SPEC, warehouse, CRM.base_url, log)
    assert (meta["sent"], meta["failed"], meta["batches"], meta["retries"], meta["created"]) == (149, 1, 2, 2, 149)
    assert meta["rejected_table"] == REJECTED and meta["rejected_sample"].value == [
        {"key": first.record_keys[3], "error": "INVALID_EMAIL"}
    ]
    assert log.lines[-1][0] == "warning" and "1 records refused by crm_contacts" in log.lines[-1][1]
    with warehouse.connect() as conn:
        assert pending(conn, SPEC.name) == []
        assert rejected_sample(conn, SPEC.name, ["p1"]) == [(first.record_keys[3], "INVALID_EMAIL")]
        assert rejected_sample(conn, SPEC.name, ["another plan"]) == []
    with open_journal(planned.journal) as journal:
        assert journal.acknowledged() == [] and journal.unacknowledged() == []


def test_sync_metadata_counts_deliveries_and_speed():
    counts = DiffCounts(adds=2, changes=1, deletes=1, unchanged=5, skipped=1, in_flight=3)
    outcome = SyncOutcome(
        counts,
        resent=[Delivery(accepted=1, updated=1)],
        sent=[Delivery(accepted=2, created=2, rejected={0: "bad"}), Delivery(accepted=1, deleted=1)],
        sample=[],
    )
    meta = sync_metadata(outcome, duration=2.0, retries=4)
    assert meta == {
        "planned": 4,
        "adds": 2,
        "changes": 1,
        "deletes": 1,
        "unchanged": 5,
        "skipped": 1,
        "in_flight": 3,
        "sent": 4,
        "created": 2,
        "updated": 1,
        "deleted": 1,
        "failed": 1,
        "batches": 3,
        "resent_batches": 1,
        "retries": 4,
        "duration_seconds": 2.0,
        "records_per_second": 2.0,
    }
