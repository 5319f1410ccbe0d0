"""Model providers: how an agent with ``model:`` in its spec gets its behaviour."""

from __future__ import annotations

from typing import Any

from agent_tree.spec import AgentSpec


def model_behaviour(agent: AgentSpec) -> Any:
    """The behaviour of a model-backed agent (OpenAI-compatible Chat Completions)."""
    from agent_tree.providers.openai_chat import make_behaviour

    return make_behaviour(agent)
