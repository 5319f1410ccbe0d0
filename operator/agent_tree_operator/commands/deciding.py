"""The work of ``agent-tree approve`` / ``reject``: find the approval, learn who the caller is, decide.

Everything goes through the Kubernetes API with the caller's own credentials: the API server
authorizes the write (RBAC), and its admission policy refuses a decider that is not the caller or
not among the approvers. This module only makes the request well-formed and the errors readable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config

from agent_tree import naming
from agent_tree.run_requests import PAST, Refused, already_decided, choose
from agent_tree.spec_runs import FINAL_PHASES
from agent_tree.unavailable import ServiceUnavailable
from agent_tree_operator.adapters.kube import MERGE, Kube, KubeError
from agent_tree_operator.reconcile.approvals import PLURAL

POLL = 0.5


def main(args: argparse.Namespace) -> int:
    try:
        namespace, run = split_target(args.run)
        api = load_client(args.kubeconfig, args.context)
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kube = Kube(api, threads=2)
    try:
        print(asyncio.run(decide(kube, namespace, run, args.id, args.decision, args.reason, args.wait)))
        return 0
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        kube.close()


def split_target(text: str) -> tuple[str, str]:
    namespace, _, run = text.partition("/")
    if not namespace or not run or "/" in run:
        raise Refused(f"expected NAMESPACE/RUN (e.g. billing/refund-7), got {text!r}")
    return namespace, run


def load_client(kubeconfig: str | None, context: str | None) -> client.ApiClient:
    """An API client with the caller's credentials (kubeconfig, else the pod's service account)."""
    configuration = client.Configuration()
    try:
        if kubeconfig or context:
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        else:
            try:
                config.load_kube_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_incluster_config(client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        raise Refused(f"no usable kubeconfig ({exc}); pass --kubeconfig or set KUBECONFIG") from None
    return client.ApiClient(configuration)


async def decide(
    kube: Kube, namespace: str, run: str, approval_id: str | None, decision: str, reason: str, wait: float
) -> str:
    """Write the decision; the line to print. Raises :class:`Refused` with a message naming the fix."""
    for attempt in range(2):
        agentrun = await call(kube, "get", "agentruns", namespace, "GET", run_path(namespace, run))
        approvals = await list_approvals(kube, namespace, agentrun)
        target = choose(namespace, run, agentrun, approvals, approval_id)
        done = already_decided(target, decision)
        if done is not None:
            return done
        phase = (agentrun.get("status") or {}).get("phase")
        if phase in FINAL_PHASES:
            raise Refused(f"AgentRun {namespace}/{run} is {phase}: nothing waits for a decision any more")
        me = await whoami(kube)
        body = {
            "metadata": {"resourceVersion": target["metadata"]["resourceVersion"]},
            "spec": {"decision": decision, "reason": reason or None, "decidedBy": me},
        }
        path = approval_path(namespace, target["metadata"]["name"])
        try:
            written = await call(kube, "patch", PLURAL, namespace, "PATCH", path, body, MERGE)
        except KubeError as exc:
            if exc.conflict and attempt == 0:
                continue  # someone wrote it meanwhile: look again (it may be decided now)
            raise
        request = written["spec"]["request"]
        line = (
            f"{PAST[decision]} approval {request['id']} of {namespace}/{run} "
            f"({request['agent']} calling {request['tool']}) as {me['username']}"
        )
        return line + await delivery(kube, path, wait)
    raise Refused(f"AgentApproval of {namespace}/{run} kept changing; try again")


async def call(
    kube: Kube, verb: str, resource: str, namespace: str, method: str, path: str, body: Any = None, ctype: str = ""
) -> Any:
    """One API call, with the API server's refusals turned into messages a person can act on."""
    try:
        if body is None:
            return await kube.call(method, path)
        return await kube.call(method, path, body, ctype or "application/json")
    except KubeError as exc:
        if exc.status == 0:
            host = kube.api.configuration.host
            raise ServiceUnavailable("the Kubernetes API", host, "--kubeconfig / KUBECONFIG", exc.message) from None
        if exc.status == 403 and "ValidatingAdmissionPolicy" in exc.message:  # admission refuses with 403 too
            raise Refused(f"refused by the API server: {exc.message}") from None
        if exc.status == 403:
            raise Refused(
                f"no permission: {exc.message}\n  ({verb} {resource}.{naming.GROUP} in namespace {namespace} is "
                f"needed; the chart's ClusterRole {naming.APPROVER_CLUSTER_ROLE} grants it: kubectl create "
                f"rolebinding -n {namespace} --clusterrole={naming.APPROVER_CLUSTER_ROLE} --user=YOU ...)"
            ) from None
        if exc.status in (400, 422) and verb == "patch":
            raise Refused(f"refused by the API server: {exc.message}") from None
        if exc.not_found and resource == "agentruns":
            raise Refused(f"AgentRun {namespace}/{path.rsplit('/', 1)[-1]} not found") from None
        raise


def run_path(namespace: str, run: str) -> str:
    return f"/apis/{naming.GROUP}/{naming.VERSION}/namespaces/{namespace}/agentruns/{run}"


def approval_path(namespace: str, name: str) -> str:
    return f"/apis/{naming.GROUP}/{naming.VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


async def list_approvals(kube: Kube, namespace: str, agentrun: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The AgentApprovals of this run (this uid: a re-created namesake's are not ours)."""
    meta = agentrun["metadata"]
    path = f"/apis/{naming.GROUP}/{naming.VERSION}/namespaces/{namespace}/{PLURAL}"
    selector = f"{naming.LABEL_RUN}={naming.run_label(meta['name'])}"
    try:
        listed = await kube.call("GET", path, query={"labelSelector": selector})
    except KubeError as exc:
        if exc.status == 403 and "ValidatingAdmissionPolicy" in exc.message:  # admission refuses with 403 too
            raise Refused(f"refused by the API server: {exc.message}") from None
        if exc.status == 403:
            raise Refused(
                f"no permission: {exc.message}\n  (list {PLURAL}.{naming.GROUP} in namespace {namespace} is needed; "
                f"the ClusterRole {naming.APPROVER_CLUSTER_ROLE} grants it)"
            ) from None
        raise
    items = [a for a in listed.get("items") or [] if a["spec"]["request"].get("runUID") == meta["uid"]]
    return sorted(items, key=lambda a: a["spec"]["request"].get("requestedAt", ""))


async def whoami(kube: Kube) -> dict[str, Any]:
    """The caller as the API server authenticates them (SelfSubjectReview, authentication.k8s.io/v1)."""
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    path = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
    answer = await call(kube, "create", "selfsubjectreviews", "-", "POST", path, review)
    info = (answer.get("status") or {}).get("userInfo") or {}
    if not info.get("username"):
        raise Refused("the API server did not say who you are (SelfSubjectReview without a username)")
    return {"username": info["username"], "groups": list(info.get("groups") or [])}


async def delivery(kube: Kube, path: str, wait: float) -> str:
    """What became of the decision within ``wait`` seconds (the operator sends it to the run)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        status = (await kube.call("GET", path)).get("status") or {}
        if status.get("delivered"):
            if status.get("accepted") is False:
                return f"\nthe run kept its earlier decision: {status.get('message')}"
            return "; the run has it"
        if status.get("phase") == "Undeliverable":
            return f"\nnot delivered: {status.get('message')}"
        await asyncio.sleep(POLL)
    return "; the operator delivers it to the run" if wait else ""
