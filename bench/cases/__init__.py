"""The benchmark cases in the order `python -m bench` runs them; a new case: a module with `CASE`, listed here."""

from ..harness import Case
from . import activation, ingest, sensor

CASES: dict[str, Case] = {case.id: case for case in (ingest.CASE, sensor.CASE, activation.CASE)}
