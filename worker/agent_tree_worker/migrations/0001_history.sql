-- agent-tree history schema, version 1.
-- Every write path is idempotent on a natural key (activities run at least once).

CREATE TABLE runs (
    workflow_id    text PRIMARY KEY,          -- agent_tree.naming.workflow_id(ns, name, uid)
    run_id         text,                      -- Temporal run id of the AgentRunWorkflow
    namespace      text NOT NULL,
    name           text NOT NULL,             -- AgentRun name
    uid            text NOT NULL,
    tree           text NOT NULL,
    tree_revision  text NOT NULL DEFAULT '',
    root_agent     text NOT NULL,
    input          text NOT NULL,
    context        jsonb NOT NULL DEFAULT '{}',
    status         text NOT NULL DEFAULT 'running',  -- running | completed | failed | max_steps_reached | cancelled
    answer         text,
    result         jsonb,
    steps          integer NOT NULL DEFAULT 0,
    token_usage    bigint NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- runs of a tree by time; the latest run of an AgentRun (agent-tree logs NS/NAME)
CREATE INDEX runs_tree_started_idx ON runs (namespace, tree, started_at DESC);
CREATE INDEX runs_name_started_idx ON runs (namespace, name, started_at DESC);
CREATE INDEX runs_finished_idx ON runs (finished_at) WHERE finished_at IS NOT NULL;

-- One row per step. ord is the step's position in the run as a path of integers
-- (workflow counter, then child turn counter, then activity-local counter); arrays
-- compare lexicographically, so ORDER BY ord is the order the steps happened in.
CREATE TABLE steps (
    run_id      text NOT NULL,                -- runs.workflow_id
    ord         integer[] NOT NULL,
    type        text NOT NULL,                -- agent_start, agent_end, handoff, tool_start, tool_end, reasoning, model_usage
    agent       text,
    data        jsonb NOT NULL,               -- the event exactly as agent_tree.events produces it
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, ord)                 -- steps of a run, in order
);
CREATE INDEX steps_created_idx ON steps (created_at);

-- Journal of tool calls: on an activity retry, completed calls are answered from here.
CREATE TABLE tool_calls (
    journal_key   text NOT NULL,              -- <workflow run id>/<activity id> of the agent turn
    seq           integer NOT NULL,           -- call number within the turn
    run_id        text NOT NULL,              -- runs.workflow_id
    agent         text NOT NULL,
    tool          text NOT NULL,
    args          jsonb NOT NULL,
    result        jsonb NOT NULL,             -- a ToolResult (large outputs as a blob reference)
    status        text NOT NULL,
    attempt       integer NOT NULL DEFAULT 1,
    completed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (journal_key, seq)
);
CREATE INDEX tool_calls_run_idx ON tool_calls (run_id);

-- Large tool results and model outputs, referenced from Temporal history by id (sha256).
CREATE TABLE blobs (
    id          text PRIMARY KEY,
    run_id      text NOT NULL,
    bytes       integer NOT NULL,
    content     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX blobs_run_idx ON blobs (run_id);

-- Append-only audit trail: rows are never updated; only the retention purge deletes them.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    key         text NOT NULL UNIQUE,         -- idempotency key, e.g. <workflow id>:run_started
    run_id      text,
    actor       text NOT NULL,
    action      text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_run_idx ON audit_log (run_id, at);
CREATE INDEX audit_log_at_idx ON audit_log (at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('agent_tree.purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (% refused); use agent-tree db purge for retention', TG_OP;
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
