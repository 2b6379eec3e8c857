"""Event-driven chaining: when a raw partition loads, the dbt models and syncs downstream of it run — once.

Files arrive through the landing sensor, which requests the raw partition of each file's landing day. Everything
downstream carries `on_upstream_change(...)`, evaluated by `AUTOMATION_SENSOR`:

- it fires when any upstream asset (partition) was updated since the asset was last requested or materialized,
  or will be requested in the same evaluation — so dbt and the syncs downstream of one raw load are requested
  together, as one run (they share no partitions);
- it waits while anything upstream — not only direct parents, every level up to the raw tables — is still
  running, so five files landing together (five raw runs) give one downstream run once the last of them is
  done, not one per load that happens to finish first;
- it never fires while the asset itself is running (`~in_progress`): no pile-up behind a slow dbt build;
- a daily-partitioned dbt model fires for the partition whose raw data changed: a late file for last week
  rebuilds last week's partition, not today's;
- unlike `AutomationCondition.eager()` it does not wait for *every* upstream partition to exist — the raw tables
  are daily-partitioned from LANDING_START_DATE, and most past days never receive files — and it does not
  materialize assets merely because they are missing (a fresh deployment waits for data, not for a cron); but an
  unpartitioned parent (a seed, a staging view, a mart) must exist or be built in the same run;
- a tick that requests several partitions of one asset (a backlog, a late file with today's) becomes one
  backfill, which honours the assets' single-run backfill policies: one run over the range, not one per day.

Seeds have no upstream, so no upstream change ever builds them: they carry `on_seed_change()` instead, built when
missing (a fresh deployment: landing files alone then carry it all the way to the CRM) or when their CSV changed.

Failed upstream checks are not a reason to hold back here: the sync gates refuse to send and fail with the reason,
which is what pages the owner (see `alerts`).
"""

from functools import cache

import dagster as dg

#: Tag on every daily-partitioned asset (the raw tables, the partitioned dbt models): most of their partitions never
#: exist (no files that day), so "every parent exists" is only asked of the others.
PARTITIONED_TAG_KEY, PARTITIONED_TAG_VALUE = "partitioned", "daily"
PARTITIONED_TAG = {PARTITIONED_TAG_KEY: PARTITIONED_TAG_VALUE}
#: Parents that need not exist for a downstream asset to run: daily-partitioned ones, and external assets (the
#: landing prefixes, dbt sources without an ingestion asset), which Dagster never materializes.
#: (`is:external` in Dagster's selection syntax; `AssetSelection.all(include_sources=True)` is a beta parameter.)
NOT_REQUIRED = dg.AssetSelection.tag(PARTITIONED_TAG_KEY, PARTITIONED_TAG_VALUE) | dg.AssetSelection.from_string(
    "is:external"
)


@cache
def upstream_in_progress(depth: int) -> dg.AutomationCondition:
    """True while any asset up to `depth` levels upstream is in progress (Dagster's `any_deps_in_progress` only
    looks at direct parents). Conditions are immutable: one per depth serves every asset (bench P1)."""
    condition: dg.AutomationCondition = dg.AutomationCondition.in_progress()
    for _ in range(max(depth, 1) - 1):
        condition = dg.AutomationCondition.in_progress() | dg.AutomationCondition.any_deps_match(condition)
    return dg.AutomationCondition.any_deps_match(condition).with_label("any_upstream_in_progress")


def on_upstream_change(depth: int, separate_runs: dg.AssetSelection | None = None) -> dg.AutomationCondition:
    """The condition of every asset downstream of the raw tables; `depth`: the longest path above it.

    `separate_runs`: for an asset with parents partitioned differently from it (an unpartitioned mart over the
    daily-partitioned models, or the reverse), those parents. Dagster launches them in a run of their own, and
    nothing orders two runs requested in one tick; so through those parents the asset fires only once one of them
    has actually updated, on a later tick. Its other parents still count as usual (e.g. `dim_customers` runs with
    `stg_shop__customers` after a customers file, and after the orders partition's run after an orders file), but
    not while one of those parents is requested or in progress.
    """
    updated: dg.AutomationCondition = dg.AutomationCondition.any_deps_updated()
    # Every (unpartitioned) parent exists or is built in the same run: a seed built by hand on a fresh deployment
    # must not send dim_customers to a dbt build whose staging views do not exist yet.
    parent_missing = dg.AutomationCondition.missing() & ~dg.AutomationCondition.will_be_requested()
    ready: dg.AutomationCondition = ~upstream_in_progress(depth) & ~dg.AutomationCondition.any_deps_match(
        parent_missing
    ).ignore(NOT_REQUIRED)
    if separate_runs is not None:
        landed = dg.AutomationCondition.newly_updated() & ~dg.AutomationCondition.executed_with_root_target()
        same_run = dg.AutomationCondition.any_deps_updated().ignore(separate_runs)
        updated = same_run | dg.AutomationCondition.any_deps_match(landed).allow(separate_runs)
        # Nor while one of those parents has an update of its own to catch up on (it is requested in this very
        # tick, and its run is not in progress yet): a customers and an orders file together must not build
        # dim_customers before the orders partition's run. (`will_be_requested` only sees parents of the same run.)
        pending = dg.AutomationCondition.any_deps_updated().since_last_handled()
        coming = dg.AutomationCondition.any_deps_match(pending).allow(separate_runs)
        ready = ready & ~coming
    return (updated.since_last_handled() & ready & ~dg.AutomationCondition.in_progress()).with_label(
        "on_upstream_change"
    )


@cache
def on_seed_change() -> dg.AutomationCondition:
    """A dbt seed: built when it does not exist yet or its CSV changed (dbt's checksum is its code version), never
    while it is being built."""
    return (
        (dg.AutomationCondition.missing() | dg.AutomationCondition.code_version_changed())
        & ~dg.AutomationCondition.in_progress()
    ).with_label("on_seed_change")


def longest_path(parents: dict[str, list[str]]) -> int:
    """Edges on the longest path of a DAG given as node -> parents (e.g. a dbt manifest's parent_map)."""
    memo: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in memo:
            memo[node] = 0  # a cycle (none in dbt) would end here instead of recursing forever
            memo[node] = max((depth(p) + 1 for p in parents.get(node, [])), default=0)
        return memo[node]

    return max((depth(n) for n in parents), default=0)


def dbt_depth(manifest: dict) -> int:
    """Levels from a raw table (a dbt source) down to the deepest dbt node; tests are not levels."""
    parents = {
        node: [p for p in ps if not p.startswith("test.")]
        for node, ps in manifest.get("parent_map", {}).items()
        if not node.startswith(("test.", "unit_test."))
    }
    return longest_path(parents)


#: Evaluates the conditions of every asset; on by default, so `make dev` and production chain without a click.
AUTOMATION_SENSOR = dg.AutomationConditionSensorDefinition(
    "downstream_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Requests dbt models and syncs whose upstream changed (on_upstream_change) and seeds that are missing"
    " or changed; several days at once become one backfill (single-run policies: one run per range).",
    emit_backfills=True,
)
