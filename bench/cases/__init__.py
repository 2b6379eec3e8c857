"""The benchmark cases in the order `python -m bench` runs them; a new case: a module with `CASE`, listed here."""

from ..harness import Case
from . import activation, end_to_end, first_hour, ingest, load, overhead, sensor, state

CASES: dict[str, Case] = {
    case.id: case
    for case in (
        load.CASE,
        overhead.CASE,
        ingest.CASE,
        sensor.CASE,
        activation.CASE,
        state.CASE,
        end_to_end.CASE,
        first_hour.CASE,
    )
}
