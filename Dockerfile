# The code location's image: one image, three roles (deploy/compose.yaml, deploy/helm/values.yaml): the code server
# (the default command below), the webserver and the daemon. Build: docker build -t analytics-pipeline .
# The build steps themselves are deploy/image/build.sh, which the production test runs too.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# --- build: the locked dependencies, then the project, its dbt manifest and the instance config -----------------------
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV=/usr/local/bin/uv UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv DAGSTER_HOME=/opt/dagster/home
WORKDIR /app
# Dependencies first: this layer is rebuilt only when pyproject.toml or uv.lock change, not on every code change.
COPY pyproject.toml uv.lock README.md ./
COPY deploy/image/build.sh deploy/image/build.sh
RUN --mount=type=cache,target=/root/.cache/uv deploy/image/build.sh deps
COPY . .
# The warehouse the image runs with: its catalog name is in the dbt manifest's relation names (build.sh).
ARG DUCKDB_PATH=/data/warehouse.duckdb
RUN --mount=type=cache,target=/root/.cache/uv deploy/image/build.sh app

# --- runtime: no uv, no build cache; a non-root user ------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --shell /usr/sbin/nologin dagster \
    && mkdir -p /data /opt/dagster/home \
    && chown dagster:dagster /data /opt/dagster/home
# The same paths as in the build stage: the virtualenv's scripts point at /app/.venv/bin/python.
COPY --from=build --chown=dagster:dagster /app /app
COPY --from=build --chown=dagster:dagster /opt/dagster/home /opt/dagster/home
ENV PATH=/app/.venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/home \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The pipeline's settings (warehouse, landing, CRM, ...) come from the deployment: deploy/compose.yaml,
# deploy/helm/values.yaml.
WORKDIR /app
USER dagster
VOLUME ["/data"]
EXPOSE 4000 3000
# The code server answers gRPC health checks; compose and the Helm values give the webserver and daemon their own.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "--port", "4000"]
CMD ["dagster", "code-server", "start", "--host", "0.0.0.0", "--port", "4000", \
     "--module-name", "pipeline.definitions", "--location-name", "analytics_pipeline"]
