"""Hypothesis strategies of AgentTree and AgentRun manifests for the fuzz tests (docs/reliability.md).

Three kinds, drawn with :func:`manifests`, each as ``(label, document)``:

- ``valid``: a tree (agents in a tree shape, Python or model agents, tools, workers, budgets) or a run;
- ``mutated:<kind>``: a valid one with ONE mutation (wrong type, unknown field, missing required
  field, out-of-range number, bad name, cycle, dangling child, duplicate names, huge string);
- ``random``: the right apiVersion / kind around a random JSON spec, or any JSON at all.

Also :func:`fuzz_settings` (how many examples: ``AGENT_TREE_FUZZ_EXAMPLES``, derandomized for CI) and
:func:`collect` (draw a corpus up front, to send it to a server in batches).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

API_VERSION = "agenttree.io/v1alpha1"
FIELD_RE = re.compile(r"^[A-Za-z_][^:\n]*: ")
"""How every rejection of a manifest starts: the path of the field at fault and a colon."""

DEFAULT_EXAMPLES = 60


def examples(default: int = DEFAULT_EXAMPLES) -> int:
    """How many examples a fuzz test draws: ``AGENT_TREE_FUZZ_EXAMPLES`` (the full run: 1000), else ``default``."""
    return int(os.environ.get("AGENT_TREE_FUZZ_EXAMPLES") or default)


def fuzz_settings(default: int = DEFAULT_EXAMPLES) -> settings:
    """Derandomized (a fixed seed: the same examples on every machine), no example database, no deadline."""
    return settings(
        max_examples=examples(default),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        # No shrinking: the documents are large and shrinking them takes minutes; the failing example
        # is printed as drawn.
        phases=[Phase.explicit, Phase.generate],
        print_blob=True,
    )


def collect(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` examples of ``strategy`` drawn by Hypothesis (derandomized), as a list."""
    out: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=["generate"],
    )
    @given(strategy)
    def draw(value: Any) -> None:
        out.append(value)

    draw()
    return out


# --- valid manifests ---------------------------------------------------------------------------

LOWER = "abcdefghijklmnopqrstuvwxyz"
names = st.text(LOWER + "0123456789", min_size=1, max_size=10).map(lambda s: "a" + s if not s[0].isalpha() else s)
short_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=40)
entrypoints = st.builds(lambda m, f: f"{m}.tools:{f}", st.sampled_from(["mod", "pkg_a", "team"]), names)
json_scalars = st.none() | st.booleans() | st.integers(-(2**31), 2**31) | short_text
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3), max_leaves=8
)


@st.composite
def models(draw: st.DrawFn, name: str) -> dict[str, Any]:
    model: dict[str, Any] = {"name": draw(st.sampled_from(["gpt-4o-mini", "m-" + name]))}
    if draw(st.booleans()):
        model["baseUrl"] = "http://127.0.0.1:9/v1"
    if draw(st.booleans()):
        model["temperature"] = draw(st.floats(0, 2, allow_nan=False))
    if draw(st.booleans()):
        model["maxTokens"] = draw(st.integers(1, 4096))
    if draw(st.booleans()):
        model["maxTurns"] = draw(st.integers(1, 50))
    if draw(st.booleans()):
        model["apiKeySecretRef"] = {"name": "model-key", "key": "apiKey"}
    if draw(st.booleans()):
        model["pricing"] = {"inputPerMillionTokens": 0.15, "outputPerMillionTokens": draw(st.integers(0, 10))}
    return model


@st.composite
def tools(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for i in range(draw(st.integers(0, 3))):
        tool: dict[str, Any] = {"name": f"tool_{i}", "entrypoint": draw(entrypoints)}
        if draw(st.booleans()):
            tool["timeoutSeconds"] = draw(st.integers(1, 3600))
        if draw(st.booleans()):
            tool["description"] = draw(short_text)
        if draw(st.integers(0, 4)) == 0:
            tool["approval"] = {"timeoutSeconds": draw(st.integers(1, 3600)), "onTimeout": "approve"}
        out.append(tool)
    return out


@st.composite
def workers(draw: st.DrawFn) -> dict[str, Any]:
    worker: dict[str, Any] = {}
    choice = draw(st.integers(0, 3))
    if choice == 1:
        worker["replicas"] = draw(st.integers(0, 3))
    elif choice == 2:
        worker["autoscale"] = {"minReplicas": 0, "maxReplicas": draw(st.integers(1, 5))}
    if draw(st.booleans()):
        worker["env"] = [{"name": "PYTHONPATH", "value": "examples/invoice"}]
    if draw(st.booleans()):
        worker["resources"] = {"requests": {"cpu": "50m"}, "limits": {"memory": "256Mi"}}
    return worker


@st.composite
def valid_trees(draw: st.DrawFn) -> dict[str, Any]:
    agent_names = draw(st.lists(names, min_size=1, max_size=6, unique=True))
    agents: list[dict[str, Any]] = [{"name": n} for n in agent_names]
    for i in range(1, len(agents)):  # each agent but the root hangs under an earlier one: a tree
        parent = agents[draw(st.integers(0, i - 1))]
        parent.setdefault("children", []).append(agents[i]["name"])
    for agent in agents:
        leaf = not agent.get("children")
        kind = draw(st.sampled_from(["python", "model"] if leaf else ["none", "model"]))
        if kind == "python":
            agent["entrypoint"] = draw(entrypoints)
        elif kind == "model":
            agent["model"] = draw(models(agent["name"]))
        if leaf and draw(st.booleans()):
            agent["tools"] = draw(tools())
        if draw(st.booleans()):
            agent["description"] = draw(short_text)
        if draw(st.integers(0, 3)) == 0:
            agent["instructions"] = draw(short_text)
        if draw(st.integers(0, 3)) == 0:
            agent["worker"] = draw(workers())
    spec: dict[str, Any] = {"root": agents[0]["name"], "agents": agents}
    if draw(st.booleans()):
        spec["maxSteps"] = draw(st.integers(1, 100))
    if draw(st.booleans()):
        spec["worker"] = draw(workers())
    if draw(st.integers(0, 4)) == 0:
        spec["budgets"] = {
            "maxTurns": draw(st.integers(1, 50)),
            "onExhausted": draw(st.sampled_from(["fail", "pause"])),
        }
    return {"apiVersion": API_VERSION, "kind": "AgentTree", "metadata": {"name": "fz-tree"}, "spec": spec}


@st.composite
def valid_runs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"treeRef": {"name": draw(st.sampled_from(["fz-missing", "fz-absent"]))}}
    spec["input"] = draw(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=80))
    if draw(st.booleans()):
        spec["context"] = draw(st.dictionaries(names, json_values, max_size=3))
    if draw(st.booleans()):
        spec["maxSteps"] = draw(st.integers(1, 100))
    if draw(st.booleans()):
        spec["timeoutSeconds"] = draw(st.integers(1, 7 * 86400))
    if draw(st.booleans()):
        spec["budgets"] = {"maxToolCalls": draw(st.integers(1, 100)), "maxTokens": draw(st.integers(1, 10**6))}
    if draw(st.integers(0, 3)) == 0:
        spec["ttlSecondsAfterFinished"] = draw(st.integers(0, 86400))
    return {"apiVersion": API_VERSION, "kind": "AgentRun", "metadata": {"name": "fz-run"}, "spec": spec}


valid_manifests = valid_trees() | valid_runs()


# --- one mutation of a valid manifest ----------------------------------------------------------


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) below ``node`` (dict keys and list indexes), ``node`` itself first."""
    out = [(prefix, node)]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _wrong_type(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return ["yes", 1, [True]]
    if isinstance(value, int | float):
        return [str(value), [value], {"value": value}, True]
    if isinstance(value, str):
        return [7, True, [value], {"v": value}, None]
    if isinstance(value, list):
        return ["x", 3, {"items": value}]
    return ["x", 3, [value]]


Mutation = Callable[[st.DrawFn, dict[str, Any]], None]


def m_wrong_type(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    # Anything goes inside a run's context (free JSON): not a place where a type can be wrong.
    spots = [(p, v) for p, v in _paths(doc["spec"], ("spec",)) if len(p) > 1 and "context" not in p]
    path, value = draw(st.sampled_from(spots))
    _set(doc, path, draw(st.sampled_from(_wrong_type(value))))


def m_unknown_field(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    spots = [p for p, v in _paths(doc) if isinstance(v, dict) and "context" not in p and "labels" not in p[-1:]]
    path = draw(st.sampled_from(spots))
    _get(doc, path)[draw(st.sampled_from(["replica", "colour", "x", "Root", "maxstep"]))] = draw(json_scalars)


REQUIRED_TREE = [("spec", "root"), ("spec", "agents"), ("metadata", "name"), ("kind",), ("apiVersion",), ("spec",)]
REQUIRED_RUN = [("spec", "input"), ("spec", "treeRef"), ("spec", "treeRef", "name"), ("metadata", "name"), ("spec",)]


def m_missing_required(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    options = list(REQUIRED_TREE if doc["kind"] == "AgentTree" else REQUIRED_RUN)
    if doc["kind"] == "AgentTree":
        options += [("spec", "agents", i, "name") for i in range(len(doc["spec"]["agents"]))]
        options += [("spec", "agents", i, "model", "name") for i, a in enumerate(doc["spec"]["agents"]) if "model" in a]
        options += [
            ("spec", "agents", i, "tools", 0, "name") for i, a in enumerate(doc["spec"]["agents"]) if a.get("tools")
        ]
    path = draw(st.sampled_from(options))
    del _get(doc, path[:-1])[path[-1]]


OUT_OF_RANGE_TREE = {
    ("spec", "maxSteps"): [0, 101, -5, 10**12],
    ("spec", "worker", "replicas"): [-1, 1001],
    ("spec", "budgets"): [{"maxTurns": 0}, {"maxCostUSD": 0}, {"maxTokens": -3}],
}
OUT_OF_RANGE_RUN = {
    ("spec", "maxSteps"): [0, 101],
    ("spec", "timeoutSeconds"): [0, 7 * 86400 + 1, -1],
    ("spec", "ttlSecondsAfterFinished"): [-1],
    ("spec", "budgets"): [{"maxToolCalls": 0}, {"maxCostUSD": -1.5}],
}


def m_out_of_range(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    if doc["kind"] == "AgentTree" and draw(st.booleans()):
        agent = draw(st.sampled_from(doc["spec"]["agents"]))
        field, values = draw(
            st.sampled_from(
                [
                    ("model", {"temperature": [2.5, -0.1], "maxTokens": [0, 1_000_001], "maxTurns": [0, 51]}),
                    ("worker", {"replicas": [-1, 1001]}),
                    ("tool", {"timeoutSeconds": [0, 3601]}),
                ]
            )
        )
        key = draw(st.sampled_from(sorted(values)))
        value = draw(st.sampled_from(values[key]))
        if field == "tool":
            agent["tools"] = [{"name": "t", "entrypoint": "m.tools:f", key: value}]
            agent.pop("children", None), agent.pop("model", None)
            doc["spec"]["agents"] = [agent]
            doc["spec"]["root"] = agent["name"]
        elif field == "model":
            agent.pop("entrypoint", None)
            agent["model"] = {**agent.get("model", {"name": "m"}), key: value}
        else:
            agent["worker"] = {key: value}
        return
    table = OUT_OF_RANGE_TREE if doc["kind"] == "AgentTree" else OUT_OF_RANGE_RUN
    path = draw(st.sampled_from(sorted(table)))
    parent = doc
    for part in path[:-1]:
        parent = parent.setdefault(part, {})
    parent[path[-1]] = draw(st.sampled_from(table[path]))


BAD_NAMES = ["Bad_Name", "UPPER", "-dash", "dot.", "sp ace", "", "a" * 300, "ü"]


def m_bad_name(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    bad = draw(st.sampled_from(BAD_NAMES))
    if doc["kind"] == "AgentTree":
        where = draw(st.sampled_from(["metadata", "agent", "tool", "root"]))
        if where == "agent":
            agent = draw(st.sampled_from(doc["spec"]["agents"]))
            old, agent["name"] = agent["name"], bad
            for other in doc["spec"]["agents"]:  # keep the tree otherwise consistent
                other["children"] = [bad if c == old else c for c in other.get("children", [])]
            if doc["spec"]["root"] == old:
                doc["spec"]["root"] = bad
            return
        if where == "tool":
            doc["spec"]["agents"][-1]["tools"] = [
                {"name": draw(st.sampled_from(["1tool", "t!", ""])), "entrypoint": "m:f"}
            ]
            return
        if where == "root":
            doc["spec"]["root"] = bad
            return
    elif draw(st.booleans()):
        doc["spec"]["treeRef"]["name"] = bad
        return
    doc["metadata"]["name"] = bad


def m_cycle(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    if doc["kind"] != "AgentTree":
        doc["spec"]["forkFrom"] = {"run": draw(st.sampled_from(["ns/run", "Run", ""]))}  # the run's closest kin
        return
    agents = doc["spec"]["agents"]
    agent = draw(st.sampled_from(agents))
    target = draw(st.sampled_from([doc["spec"]["root"], agent["name"]]))
    agent.setdefault("children", []).append(target)


def m_dangling_child(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    if doc["kind"] != "AgentTree":
        doc["spec"]["treeRef"] = {}
        return
    agent = draw(st.sampled_from(doc["spec"]["agents"]))
    target = draw(st.sampled_from(["ghost", "nobody"]))
    if draw(st.booleans()):
        agent.setdefault("children", []).append(target)
    else:
        agent.setdefault("tools", []).append({"name": "ask_ghost", "agent": target})


def m_duplicate_names(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    if doc["kind"] != "AgentTree":
        doc["spec"]["budgets"] = {"maxTurns": 1, "maxTurns ": 2}
        return
    agents = doc["spec"]["agents"]
    if draw(st.booleans()) or len(agents) == 1:
        agents.append(copy.deepcopy(draw(st.sampled_from(agents))))
    else:
        agent = agents[-1]
        agent.pop("children", None)
        agent["tools"] = [{"name": "same", "entrypoint": "m:f"}, {"name": "same", "entrypoint": "m:g"}]


HUGE = [5_000, 70_000, 300_000]


def m_huge_string(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    spots = [p for p, v in _paths(doc) if isinstance(v, str)]
    path = draw(st.sampled_from(spots))
    _set(doc, path, draw(st.sampled_from(["x", "é", "a-"])) * draw(st.sampled_from(HUGE)))


MUTATIONS: dict[str, Mutation] = {
    "wrong_type": m_wrong_type,
    "unknown_field": m_unknown_field,
    "missing_required": m_missing_required,
    "out_of_range": m_out_of_range,
    "bad_name": m_bad_name,
    "cycle": m_cycle,
    "dangling_child": m_dangling_child,
    "duplicate_names": m_duplicate_names,
    "huge_string": m_huge_string,
}


def mutated(kind: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    @st.composite
    def one(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
        doc = copy.deepcopy(draw(valid_manifests))
        MUTATIONS[kind](draw, doc)
        return f"mutated:{kind}", doc

    return one()


@st.composite
def random_manifests(draw: st.DrawFn) -> tuple[str, Any]:
    if draw(st.integers(0, 3)) == 0:
        return "random", draw(json_values)
    kind = draw(st.sampled_from(["AgentTree", "AgentRun"]))
    spec = draw(st.dictionaries(st.sampled_from(["root", "agents", "treeRef", "input", "maxSteps", "x"]), json_values))
    return "random", {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "fz-random"}, "spec": spec}


CATEGORIES = ["valid", "valid", *sorted(MUTATIONS), "random", "random"]
"""What :func:`corpus` cycles through: 2 valid, each mutation once, 2 random (of 13)."""


def manifest_of(category: str) -> st.SearchStrategy[tuple[str, Any]]:
    if category == "valid":
        return valid_manifests.map(lambda d: ("valid", d))
    if category == "random":
        return random_manifests()
    return mutated(category)


def manifests() -> st.SearchStrategy[tuple[str, Any]]:
    """``(label, document)`` of any category (for ``@given``)."""
    return st.sampled_from(CATEGORIES).flatmap(manifest_of)


def corpus(count: int) -> list[tuple[str, Any]]:
    """``count`` manifests, the categories in :data:`CATEGORIES`' proportions (derandomized)."""
    out: list[tuple[str, Any]] = []
    for i, category in enumerate(CATEGORIES):
        share = count // len(CATEGORIES) + (1 if i < count % len(CATEGORIES) else 0)
        if share:
            out += collect(manifest_of(category), share)
    return out


def dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), allow_unicode=True, sort_keys=False)


def names_a_field(message: str) -> bool:
    return bool(FIELD_RE.match(message))


__all__ = [
    "CATEGORIES",
    "FIELD_RE",
    "MUTATIONS",
    "collect",
    "corpus",
    "dump",
    "examples",
    "fuzz_settings",
    "manifests",
    "names_a_field",
]
