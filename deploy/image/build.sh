#!/usr/bin/env bash
# The image's build steps. The Dockerfile runs them, and so does the production test
# (tests/integration/test_production.py) outside a container, into a temporary folder: one list of steps for both.
#
#   deploy/image/build.sh deps   the locked dependencies only (needs pyproject.toml and uv.lock: its own image layer,
#                                rebuilt only when they change)
#   deploy/image/build.sh app    the project itself, its dbt manifest (the code server then loads without parsing),
#                                and the production instance config in DAGSTER_HOME
#
# Runs in the application folder (the image's /app). Reads UV (the uv binary; default: uv on PATH), PYTHON (default
# python3), UV_PROJECT_ENVIRONMENT (the virtualenv; default ./.venv), DAGSTER_HOME (required by `app`) and
# DUCKDB_PATH (the warehouse the image will use; default /data/warehouse.duckdb).
set -euo pipefail

step=${1:?usage: deploy/image/build.sh deps|app}
uv=${UV:-uv}
export UV_PROJECT_ENVIRONMENT=${UV_PROJECT_ENVIRONMENT:-$PWD/.venv}
# --frozen: exactly uv.lock, never re-resolved; --no-dev: no test tools or local stand-ins; --extra production:
# dagster-postgres; --compile-bytecode: no process compiles Dagster's or dbt's modules again at start (containers run
# with PYTHONDONTWRITEBYTECODE=1, so nothing would ever be cached).
sync=("$uv" sync --frozen --no-dev --extra production --compile-bytecode --python "${PYTHON:-python3}")

if ! command -v "$uv" >/dev/null; then
    echo "deploy/image/build.sh: no uv at '$uv': set UV to the uv binary (the Dockerfile copies it from ghcr.io/astral-sh/uv; make install puts one in .bootstrap/bin/uv)" >&2
    exit 2
fi

case $step in
deps)
    "${sync[@]}" --no-install-project
    ;;
app)
    : "${DAGSTER_HOME:?is required: the folder the instance config (deploy/dagster.production.yaml) goes to, e.g. /opt/dagster/home}"
    "${sync[@]}"
    # dagster-dbt reads dbt_project/target/manifest.json when the code server loads; outside `dagster dev` it never
    # parses by itself. The manifest's relation names carry the warehouse's catalog (dbt-duckdb: the file's stem,
    # "warehouse" for /data/warehouse.duckdb; the database of an md: path), so parse with the DUCKDB_PATH the image
    # will run with (the Dockerfile's build argument). Parsing opens no connection. The project's path is absolute:
    # the manifest keeps it, and dbt runs seeds from the project's folder (a relative one finds no seed files).
    DUCKDB_PATH=${DUCKDB_PATH:-/data/warehouse.duckdb} "$UV_PROJECT_ENVIRONMENT/bin/dbt" parse --quiet \
        --project-dir "$PWD/dbt_project" --profiles-dir "$PWD/dbt_project" --target prod
    mkdir -p "$DAGSTER_HOME"
    cp deploy/dagster.production.yaml "$DAGSTER_HOME/dagster.yaml"
    ;;
*)
    echo "deploy/image/build.sh: unknown step '$step' (expected deps or app)" >&2
    exit 2
    ;;
esac
