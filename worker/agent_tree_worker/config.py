"""Worker configuration: the shared :class:`agent_tree.settings.Settings` plus worker-only fields.

Loaded once from ``AGENT_TREE_*`` variables (command-line options win); errors name the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent_tree import naming
from agent_tree.settings import Settings, SettingsError

# Entries one run's Redis stream keeps (AGENT_TREE_STREAM_MAXLEN); older steps stay in PostgreSQL.
STREAM_MAXLEN = 10_000


def _int(env: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = env.get(key)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise SettingsError(f"{key}={value} is outside {low}..{high}")
    return value


@dataclass(frozen=True)
class WorkerConfig:
    settings: Settings
    task_queue: str
    graceful_shutdown_seconds: int = 30
    max_concurrent_activities: int = 50
    migrate: bool = True
    paths: tuple[str, ...] = field(default_factory=tuple)
    stream_maxlen: int = STREAM_MAXLEN

    @classmethod
    def load(
        cls,
        *,
        task_queue: str | None = None,
        tree: str | None = None,
        agent: str | None = None,
        paths: tuple[str, ...] = (),
        migrate: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> WorkerConfig:
        """Options first, then ``AGENT_TREE_TASK_QUEUE`` or ``AGENT_TREE_TREE`` (``NS/NAME``) + ``AGENT_TREE_AGENT``.

        Raises:
            SettingsError: no queue could be determined, or a variable is malformed.
        """
        env = os.environ if env is None else env
        settings = Settings.from_env(env)
        queue = task_queue or (None if (tree or agent) else env.get("AGENT_TREE_TASK_QUEUE"))
        if not queue:
            tree = tree or env.get("AGENT_TREE_TREE")
            agent = agent or env.get("AGENT_TREE_AGENT")
            if not tree or not agent:
                raise SettingsError(
                    "no task queue: pass --task-queue Q or --tree NS/NAME --agent NAME "
                    "(or set AGENT_TREE_TASK_QUEUE, or AGENT_TREE_TREE and AGENT_TREE_AGENT)"
                )
            namespace, sep, name = tree.partition("/")
            if not sep or not namespace or not name:
                raise SettingsError(f"AGENT_TREE_TREE / --tree {tree!r}: expected NAMESPACE/NAME, e.g. default/invoice")
            queue = naming.task_queue(namespace, name, agent)
        extra = tuple(p for p in (env.get("AGENT_TREE_PYTHONPATH") or "").split(os.pathsep) if p)
        if migrate is None:
            migrate = (env.get("AGENT_TREE_MIGRATE") or "true").lower() not in ("0", "false", "no", "off")
        return cls(
            settings=settings,
            task_queue=queue,
            graceful_shutdown_seconds=_int(env, "AGENT_TREE_GRACEFUL_SHUTDOWN_SECONDS", 30, 0, 3600),
            max_concurrent_activities=_int(env, "AGENT_TREE_MAX_CONCURRENT_ACTIVITIES", 50, 1, 10_000),
            migrate=migrate,
            paths=(*paths, *extra),
            stream_maxlen=_int(env, "AGENT_TREE_STREAM_MAXLEN", STREAM_MAXLEN, 1, 10_000_000),
        )
