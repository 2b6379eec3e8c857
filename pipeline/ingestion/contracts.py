"""Typed view of contracts.yaml: which tables each source system delivers and what their columns are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..settings import read_yaml

CONTRACTS_PATH = Path(__file__).with_name("contracts.yaml")
EXTRA_COLUMN_POLICIES = ("ignore", "load", "reject")

#: The asset check every raw table carries: each landed file met its contract.
CONTRACT_CHECK = "landing_contract"

#: Columns the loader adds to every raw table, after the contract's own.
LINEAGE_COLUMNS = {"_source_file": "VARCHAR", "_landing_date": "DATE", "_loaded_at": "TIMESTAMP"}


@dataclass(frozen=True)
class SourceTable:
    system: str
    table: str
    file: str
    description: str
    primary_key: tuple[str, ...]
    columns: dict[str, str]
    extra_columns: str = "ignore"
    #: Columns a file may lack (loaded as NULL); every other declared column is required.
    optional: frozenset[str] = frozenset()
    delimiter: str = ","
    #: who answers for this system's files (an email or `team:name`); failure alerts are routed by it
    owner: str | None = None

    @property
    def required_columns(self) -> list[str]:
        return [c for c in self.columns if c not in self.optional]

    @property
    def asset_key(self) -> list[str]:
        return ["raw", self.table]

    @property
    def qualified_name(self) -> str:
        return f"raw.{self.table}"

    @property
    def landing_prefix(self) -> str:
        """Keys of this system start here; the table's own files are picked by file name."""
        return f"{self.system}/"

    def all_columns(self) -> dict[str, str]:
        return {**self.columns, **LINEAGE_COLUMNS}


def load_contracts(path: Path = CONTRACTS_PATH) -> list[SourceTable]:
    document = read_yaml(path)
    tables: list[SourceTable] = []
    for system, spec in (document.get("systems") or {}).items():
        for table, tspec in (spec.get("tables") or {}).items():
            # A column is `name: TYPE` (required) or `name: {type: TYPE, required: false}`.
            raw_columns = tspec.get("columns") or {}
            columns = {str(k): str(v["type"] if isinstance(v, dict) else v) for k, v in raw_columns.items()}
            optional = frozenset(
                str(k) for k, v in raw_columns.items() if isinstance(v, dict) and not v.get("required", True)
            )
            primary_key = tuple(tspec.get("primary_key") or ())
            policy = tspec.get("extra_columns", "ignore")
            problems = [k for k in primary_key if k not in columns or k in optional]
            if not columns or problems or policy not in EXTRA_COLUMN_POLICIES:
                raise ValueError(
                    f"{path}: {system}.{table} needs columns, a primary key among them (unknown: {problems})"
                    f" and extra_columns in {EXTRA_COLUMN_POLICIES} (got {policy!r})"
                )
            tables.append(
                SourceTable(
                    system=system,
                    table=table,
                    file=tspec.get("file", table),
                    description=tspec.get("description", ""),
                    primary_key=primary_key,
                    columns=columns,
                    extra_columns=policy,
                    optional=optional,
                    delimiter=str(tspec.get("delimiter", ",")),
                    owner=spec.get("owner"),
                )
            )
    names = [t.table for t in tables]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: raw table names must be unique across systems, repeated: {duplicates}")
    return tables
