"""Fuzzing manifests against the real API server and the operator (docs/reliability.md, "Fuzzing").

The generated corpus of tests/unit/fuzz_manifests.py (valid, one mutation away, random) goes through
``agent-tree validate``'s model (offline) and the API server's admission (server-side dry-run, field
validation Strict as kubectl does); a sample of the admitted ones is created for real in one namespace
(a ResourceQuota of 0 pods: no worker runs) with ``agent-tree operator`` running as a process. Then:

- every rejection by admission names a field, and the operator's log holds no traceback;
- offline and admission-plus-the-operator agree: a manifest offline validation refuses is refused at
  admission, or (an AgentTree) admitted and marked ``Degraded`` (InvalidSpec) by the operator; one it
  accepts is admitted. The disagreements that remain are listed in :data:`KNOWN` and in
  docs/reliability.md, each with its reproduction; a new one fails this test.

Reduced in the normal test run; ``AGENT_TREE_FUZZ_EXAMPLES=1000 pytest -m fuzz tests/e2e`` is the full one.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from operator_process import OperatorProcess, apply_crds, namespace, ok, running
from platformlib import Platform, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from fuzz_manifests import corpus, examples

from agent_tree.spec import ManifestError, parse_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]
GROUP, VERSION = "agenttree.io", "v1alpha1"
PLURALS = {"AgentTree": "agenttrees", "AgentRun": "agentruns"}
# How the API server names the field at fault: "spec.agents[0].name: Invalid value", "Object 'Kind' is
# missing", 'unknown field "spec.x"', "metadata.name: Invalid value", ...
FIELD_IN_MESSAGE = re.compile(
    r"(\b(spec|metadata|status)(\.|\[|:| )|'Kind'|apiVersion|API version|\bkind\b|unknown field \")"
)

KNOWN: dict[str, str] = {}
"""Disagreements between offline validation and admission-plus-operator, by key (see docs/reliability.md)."""


def offline(doc: Any) -> list[str]:
    try:
        parse_manifest(doc, "doc")
    except ManifestError as exc:
        return exc.errors
    return []


def kind_of(doc: Any) -> str:
    kind = doc.get("kind") if isinstance(doc, dict) else None
    return kind if kind in PLURALS else "AgentTree"


def named(doc: Any, i: int) -> Any:
    """The document with a unique name when it kept the generator's (real creates need one each)."""
    if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
        if doc["metadata"].get("name") in ("fz-tree", "fz-run", "fz-random"):
            doc = copy.deepcopy(doc)
            doc["metadata"]["name"] = f"{doc['metadata']['name']}-{i}"
    return doc


def create(api: Any, ns: str, doc: Any, dry_run: bool) -> tuple[int, str]:
    """POST the document (status, message): 201 or the API server's refusal."""
    from kubernetes.client.rest import ApiException

    if not isinstance(doc, dict):  # kubectl refuses it before any request; so does the client
        return 400, "Object 'Kind' is missing: not an object (not sent)"
    kwargs = {"dry_run": "All"} if dry_run else {}
    try:
        api.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURALS[kind_of(doc)], doc, field_validation="Strict", **kwargs
        )
    except ApiException as exc:
        try:
            message = json.loads(exc.body).get("message", "")
        except (TypeError, ValueError):
            message = str(exc.body)[:500]
        return exc.status, message
    return 201, ""


def degraded(obj: dict[str, Any]) -> dict[str, Any] | None:
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return None  # not reconciled yet
    return next((c for c in status.get("conditions") or [] if c["type"] == "Degraded"), None)


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(platform)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with running(OperatorProcess(platform, log, "fz-man-*")) as op:
        yield op


def test_manifests_offline_and_at_admission_with_the_operator_agree(platform: Platform, operator: OperatorProcess):
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    k8s_config.load_kube_config(platform.kubeconfig)
    api = k8s.CustomObjectsApi()
    docs = [(label, named(doc, i)) for i, (label, doc) in enumerate(corpus(examples(65)))]
    verdicts = [offline(doc) for _, doc in docs]
    with namespace(platform, operator, "fz-man", cleanup_timeout=120) as ns:
        quota = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-pods"},
            "spec": {"hard": {"pods": "0"}},
        }
        ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(quota)))
        with ThreadPoolExecutor(8) as pool:
            admitted = list(pool.map(lambda d: create(api, ns, d[1], dry_run=True), docs))

        unnamed, disagree, table = [], {}, Counter()
        for (label, doc), problems, (status, message) in zip(docs, verdicts, admitted, strict=True):
            table[(label, "offline " + ("refuses" if problems else "accepts"), f"admission {status}")] += 1
            if status != 201 and not FIELD_IN_MESSAGE.search(message):
                unnamed.append(f"{label}: {status} {message[:300]}")
            if not problems and status != 201:
                disagree.setdefault(f"admission refuses what validate accepts ({label})", []).append(
                    (doc, message[:300])
                )

        # Admitted but refused offline: created for real, the operator must say so (trees) ...
        sample = [
            (label, doc, problems)
            for (label, doc), problems, (status, _) in zip(docs, verdicts, admitted, strict=True)
            if status == 201 and isinstance(doc, dict)
        ][: examples(65) // 3 + 20]
        with ThreadPoolExecutor(8) as pool:
            real = list(pool.map(lambda s: create(api, ns, s[1], dry_run=False), sample))
        assert all(status == 201 for status, _ in real), [r for r in real if r[0] != 201][:5]

        def reconciled() -> list[dict[str, Any]] | None:
            trees = api.list_namespaced_custom_object(GROUP, VERSION, ns, "agenttrees")["items"]
            runs = api.list_namespaced_custom_object(GROUP, VERSION, ns, "agentruns")["items"]
            done = all(degraded(t) is not None for t in trees) and all(
                (r.get("status") or {}).get("phase") for r in runs
            )
            return [*trees, *runs] if done else None

        objects = {o["metadata"]["name"]: o for o in wait_for(reconciled, 300, "the operator's status on every object")}
        for label, doc, problems in sample:
            obj = objects.get(doc["metadata"]["name"])
            if obj is None:  # a run that finished at once (e.g. forkFrom an unknown run) and whose TTL was 0
                assert doc["kind"] == "AgentRun" and "ttlSecondsAfterFinished" in doc["spec"], doc
                table[(label, "real run", "deleted after its TTL")] += 1
                continue
            if doc["kind"] == "AgentTree":
                cond = degraded(obj) or {}
                invalid = cond.get("status") == "True" and cond.get("reason") == "InvalidSpec"
                table[(label, "real tree", "InvalidSpec" if invalid else cond.get("reason", "?"))] += 1
                if invalid != bool(problems):
                    disagree.setdefault(f"operator's Degraded differs from validate ({label})", []).append(
                        (doc, cond.get("message", "")[:300])
                    )
                elif invalid and not any(p.split(":")[0] in cond.get("message", "") for p in problems):
                    unnamed.append(f"{label}: Degraded message without the field: {cond.get('message')}")
            else:
                phase = (obj.get("status") or {}).get("phase")
                table[(label, "real run", phase)] += 1
                if problems:
                    disagree.setdefault(f"admitted AgentRun that validate refuses ({label})", []).append(
                        (doc, "; ".join(problems)[:300])
                    )
    log = operator.log.read_text(errors="replace")
    print(f"\n{len(docs)} manifests, {len(sample)} created for real:")
    for key, count in sorted(table.items(), key=str):
        print(f"  {count:5d}  {' | '.join(str(k) for k in key)}")
    for key, cases in sorted(disagree.items()):
        doc, why = cases[0]
        print(f"DISAGREE {key}: {len(cases)} case(s); e.g. {why}\n    {json.dumps(doc)[:600]}")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 : log.index("Traceback") + 3000]
    assert unnamed == [], "\n".join(unnamed[:20])
    new = sorted(set(disagree) - set(KNOWN))
    assert new == [], f"new disagreements between validate and admission + operator: {new}"
