-- agent-tree history schema, version 2: indexes for `agent-tree runs` (newest first, keyset-paginated
-- on (started_at, workflow_id)), across all namespaces and within one.
CREATE INDEX runs_started_idx ON runs (started_at DESC, workflow_id DESC);
CREATE INDEX runs_ns_started_idx ON runs (namespace, started_at DESC, workflow_id DESC);
