# syntax=docker/dockerfile:1
#
# One image, three entrypoints:
#   agent-tree operator                      (the kopf operator; the Helm chart runs this)
#   agent-tree api                           (the REST API and web view; the Helm chart runs this)
#   agent-tree worker --task-queue QUEUE     (one agent's Temporal worker; the operator runs this)
# It also carries the invoice example (/app/examples/invoice), so examples/invoice/agenttree.yaml
# runs on the chart's default worker image.
#
# Build:   docker build -t agent-tree:0.1.0 .
# Teams extend it with their own agents and tools: see docs/worker-image.md and
# examples/worker-image/Dockerfile.
#
# The base is pinned to an exact Python patch release and Debian suite; for reproducible
# production builds pin the digest too:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: wheels of agent-tree and its dependencies into a venv ----------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
# Metadata first: the dependency layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
COPY agent_tree ./agent_tree
COPY operator ./operator
COPY worker ./worker
COPY api ./api
# The web view (web/, TypeScript): built into api/agent_tree_api/static/ before the package is
# installed, so the wheel ships it (package-data). Node and npm only in this build stage; the
# toolchain versions are pinned by web/package-lock.json (the same as hack/build-web.sh runs).
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
COPY web ./web
RUN cd web && npm ci --no-audit --no-fund && npm run build
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- runtime: the venv on a clean base, non-root, no build tools ------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="agent-tree" \
      org.opencontainers.image.description="Operator and Temporal worker of agent-tree" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric uid/gid so Kubernetes' runAsNonRoot can verify the user without /etc/passwd lookups.
RUN groupadd --system --gid 10001 agent-tree \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin agent-tree \
 && mkdir -p /app \
 && chown 10001:10001 /app
COPY --from=build /opt/venv /opt/venv
# PYTHONDONTWRITEBYTECODE: the chart mounts the root filesystem read-only (bytecode is precompiled
# above). HOME=/tmp: the only writable path under readOnlyRootFilesystem (an emptyDir in the chart).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /app
# The invoice example, so the README's cluster path runs on the chart's defaults: its AgentTree sets
# PYTHONPATH=examples/invoice, relative to this WORKDIR. Owned by root: read-only for the worker.
COPY --chown=0:0 examples/invoice /app/examples/invoice
RUN python -m compileall -q /app/examples/invoice
USER 10001:10001
ENTRYPOINT ["agent-tree"]
CMD ["--help"]
