"""agent_tree_worker: durable runs of agent trees on Temporal, history in PostgreSQL, progress in Redis.

One worker process serves one agent's task queue (``agent-tree worker``); see ``docs/durable-runs.md``.
"""
