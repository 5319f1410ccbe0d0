-- agent-tree history schema, version 3: retry and fork from any step (docs/run-control.md).

-- What every model call, tool call and planner call returned, keyed by the ord of the step that
-- records its outcome (a tool call's tool_end, a model call's / the planner's first reasoning or
-- model_usage step; a call of a Python agent's quiet turn: <turn ord>, 0, <call number>). A fork
-- answers its calls up to the forked step from its source's rows here instead of calling again.
CREATE TABLE recorded_calls (
    run_id      text NOT NULL,                -- runs.workflow_id
    ord         integer[] NOT NULL,
    kind        text NOT NULL,                -- model | tool | plan
    result      jsonb NOT NULL,               -- what the activity returned (large values as blob references)
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, ord)
);

-- The tree spec a run was pinned to, per revision (runs.tree_revision): a fork runs on its source's
-- spec after the AgentTree changed or was deleted.
CREATE TABLE tree_specs (
    revision    text PRIMARY KEY,
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A retried or forked run names its source: the source's workflow id and the last reused step.
ALTER TABLE runs ADD COLUMN forked_from text;
ALTER TABLE runs ADD COLUMN fork_step integer;
ALTER TABLE runs ADD COLUMN fork_until_ord integer[];
CREATE INDEX runs_forked_from_idx ON runs (forked_from) WHERE forked_from IS NOT NULL;
