"""Routing for model-backed supervisors, pure: a model supervisor is asked once which child to hand
off to (one ``transfer_to_<child>`` function per child); its answer becomes the run's plan, and
:mod:`agent_tree.policy` routes from there (a plan can reorder children, never hide one).
"""

from __future__ import annotations

from typing import Any

from agent_tree.providers.replies import truncate

TRANSFER_PREFIX = "transfer_to_"


def transfer_tool_name(child: str) -> str:
    return f"{TRANSFER_PREFIX}{child}"


def router_tools(children: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """One ``transfer_to_<child>`` function per child (name, description)."""
    return [
        {
            "type": "function",
            "function": {
                "name": transfer_tool_name(name),
                "description": f"Hand the request off to the {name} agent. {description}".strip(),
                "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}},
            },
        }
        for name, description in children
    ]


def router_messages(agent: dict[str, Any], user_input: str) -> list[dict[str, Any]]:
    system = (agent.get("instructions") or f"You are the {agent['name']} supervisor.") + (
        "\n\nDecide which agent should handle the request: call the transfer_to_<agent> function of the best "
        "agent (you may call several, best first)."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user_input}]


def plan_from_response(children: list[str], response: dict[str, Any]) -> dict[str, Any]:
    """The plan a routing reply gives: ``{"route": [children...], "reason": ...}``."""
    route = []
    for call in response.get("tool_calls") or []:
        name = call.get("name", "")
        child = name[len(TRANSFER_PREFIX) :] if name.startswith(TRANSFER_PREFIX) else None
        if child in children and child not in route:
            route.append(child)
    plan: dict[str, Any] = {"route": route}
    reason = response.get("content")
    if isinstance(reason, str) and reason.strip():
        plan["reason"] = truncate(reason.strip(), 1000)
    if not route:
        plan["note"] = "the model chose no child; children are tried in tree order"
    return plan
