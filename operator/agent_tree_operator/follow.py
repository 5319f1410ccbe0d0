"""Following one AgentRun from Pending to its final phase (the body of the per-run kopf daemon).

Every pass has the tree path's shape: observe (the tree index, the run's annotations and age, the
workflow, the progress stream) -> :func:`~agent_tree_operator.reconcile.run_plan.plan_run` (pure: wait,
start, cancel, finish, follow) -> act -> ONE status write, decided by
:func:`~agent_tree_operator.reconcile.runs.plan_write` (pure: the first write when the run starts, then
at most one per ``AGENT_TREE_STATUS_INTERVAL_MS`` and only on change, and the final write at once).

1. A workflow with the run's id exists already (an operator restart): follow it; its memo says which
   tree revision the run is pinned to.
2. Otherwise wait for the tree (Pending, with the reason, only while the tree is missing, invalid or
   Degraded), then start ``AgentRunWorkflow`` with a snapshot of the tree spec and its revision:
   editing the tree later never changes this run. A run whose tree is ready starts at once and writes
   no Pending (the CRD's default status already says Pending).
3. Follow progress (the run's Redis stream; the workflow's ``progress`` query when Redis is away) and
   fold it into the status summary. A tool call waiting for a person (an ``approval_requested`` step)
   gets an AgentApproval, created idempotently (again after a restart, when it is missing); once the
   run decided (``approval_decided``), that AgentApproval's status says how and by whom.
4. The final phase comes from the workflow's result (or how it failed / was cancelled).
5. With ``spec.ttlSecondsAfterFinished``, delete the run that long after it finished.

Every wait also watches ``stopped`` (run deleted, operator exiting): the daemon then returns at once,
and the deletion handler cancels the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from agent_tree import naming
from agent_tree.contract import AGENT_START, RUN_END, RunInputError, is_transient, run_input, spec_revision
from agent_tree.spec import AgentTreeSpec
from agent_tree_operator import approval_sync, metrics
from agent_tree_operator.adapters.stream import Subscription, step_event
from agent_tree_operator.adapters.temporal import Outcome
from agent_tree_operator.handlers.context import OperatorContext
from agent_tree_operator.reconcile import forks
from agent_tree_operator.reconcile.conditions import now_iso, parse_iso
from agent_tree_operator.reconcile.run_plan import RunObserved, check_tree, plan_run
from agent_tree_operator.reconcile.runs import (
    Coalescer,
    K8sEvent,
    LiveRun,
    cut,
    plan_write,
)
from agent_tree_operator.reconcile.trees import plain

CANCEL_ANNOTATION = naming.CANCEL_ANNOTATION
IDLE_TICK = 1.0  # how often an idle follower re-checks the cancel annotation and its deadline
TREE_RECHECK = 5.0  # a Pending run re-checks its deadline and the cancel annotation this often
TEMPORAL_CALLS = ("describe the workflow", "start the workflow")
RETRY = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
KIND = "AgentRun"

log = logging.getLogger(__name__)


class Stopped(Exception):
    """The daemon was asked to stop (run deleted or operator exiting)."""


class RunFollower:
    def __init__(self, ctx: OperatorContext, body: Any, stopped: Any, trees: Any, logger: logging.Logger | None = None):
        self.ctx = ctx
        self.body = body  # kopf keeps this view current with the latest watch event
        self.stopped = stopped
        self.trees = trees
        self.logger = logger or log
        meta = body["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.spec: dict[str, Any] = plain(body.get("spec") or {})
        self.tree: str = (self.spec.get("treeRef") or {}).get("name", "")
        self.workflow_id = naming.workflow_id(self.namespace, self.name, self.uid)
        self.written: dict[str, Any] = plain(body.get("status") or {})
        self.live = LiveRun.from_status(self.written, ref=f"{self.namespace}/{self.name}")
        self.ensured: set[str] = set()  # approval ids whose AgentApproval exists (created or found)
        self.coalescer = Coalescer(ctx.config.status_interval)
        self.due_in: float | None = None  # a change held back by the interval goes out this much later
        self.started = False
        self.cancel_sent = False
        self.announced = 0  # handoffs already posted as Events (by an earlier operator process)
        # spec.budgets as the workflow last got them (the run's input; None after a restart: send once)
        self.sent_budgets: Any = self.spec.get("budgets")

    # --- entry ----------------------------------------------------------------------------------
    async def run(self) -> None:
        self.ctx.followed += 1
        metrics.RUNS_FOLLOWED.inc()
        try:
            if not self.live.final:
                metrics.RUNS_ACTIVE.inc()
                try:
                    await self._drive()
                finally:
                    metrics.RUNS_ACTIVE.dec()
                    self.ctx.activity.drop(self.uid)
                    self.ctx.approvals.drop(self.uid)
            await self._expire()
        except Stopped:
            self.logger.debug("follower of %s/%s stopped", self.namespace, self.name)
        except Exception:
            metrics.RECONCILES.labels(KIND, "error").inc()
            raise
        finally:
            self.ctx.followed -= 1
            metrics.RUNS_FOLLOWED.dec()

    async def _drive(self) -> None:
        described = await self._retrying("describe the workflow", lambda: self.ctx.temporal.describe(self.workflow_id))
        if described is None:
            fork = None
            if self.spec.get("forkFrom"):
                fork = await self._resolve_fork()
                if fork is None:
                    return
                self.tree = fork.tree
            if fork is not None and fork.spec is not None:
                spec = AgentTreeSpec.model_validate(fork.spec)  # the source's pinned spec, as it ran
            else:
                spec = await self._wait_for_tree()
            if spec is None or not await self._start(spec, fork):
                return
        else:
            metrics.RECONCILES.labels(KIND, "resumed").inc()
            self.started = True
            self.sent_budgets = None  # they may have changed while no operator watched
            self.live.running(self.workflow_id, described.revision, None, self._started_at())
            self._track()
            # The stream is replayed from its start: do not announce again the handoffs an earlier
            # operator process already posted as Events.
            self.announced = self.live.steps
            await self._write()
        handle = await self._retrying("get the workflow handle", lambda: self.ctx.temporal.handle(self.workflow_id))
        if described is not None and described.running:
            # After a restart: the workflow's own list of pending approvals (the stream may be trimmed),
            # so that a missing AgentApproval is made again.
            progress = await self.ctx.temporal.progress(handle)
            if progress is not None:
                for event in self.live.apply_approvals(progress.get("approvals")):
                    self._event(event)
        await self._finish(await self._follow(handle))

    # --- observe ------------------------------------------------------------------------------------
    def _observe(self) -> RunObserved:
        """What :func:`plan_run` decides on; the tree is looked up only while the run has not started."""
        created = parse_iso(self.body["metadata"].get("creationTimestamp"))
        age = (dt.datetime.now(dt.UTC) - created).total_seconds() if created is not None else None
        tree = None
        if not self.started:
            entries = list(self.trees.get((self.namespace, self.tree), [])) if self.trees is not None else []
            raw = entries[0]["spec"] if entries else None
            tree = check_tree(self.namespace, self.tree, raw, entries[0].get("status") if entries else None)
        timeout = self.spec.get("timeoutSeconds")
        return RunObserved(
            phase=self.live.phase,
            started=self.started,
            cancel_requested=self._cancel_requested(),
            cancel_sent=self.cancel_sent,
            age=age,
            timeout_seconds=int(timeout) if timeout else None,
            tree=tree,
        )

    # --- waiting for the tree, starting -------------------------------------------------------------
    async def _wait_for_tree(self) -> Any:
        """Pending (saying why) until the tree can run this run; its spec, or None when the run ended."""
        while True:
            self._check_stopped()
            plan = plan_run(self._observe())
            if plan.action == "start":
                return plan.spec
            if plan.action == "finish":
                await self._finish(Outcome(phase=plan.phase, reason=plan.reason, message=plan.message))
                return None
            self.live.pending(plan.reason, plan.message)  # "wait": the run really waits
            await self._write()
            await self._wait_tree((self.namespace, self.tree))

    async def _resolve_fork(self) -> forks.ForkPlan | None:
        """``spec.forkFrom`` from the history (the source AgentRun may be gone); None: the run failed."""
        history, name = self.ctx.history, self.spec["forkFrom"]["run"]
        try:
            if history is None:
                raise forks.ForkError(forks.NO_HISTORY)
            read = await self._retrying(
                "read the fork's source from the history", lambda: history.fork_source(self.namespace, name)
            )
            plan = forks.plan_fork(self.namespace, self.spec, *read)
        except forks.ForkError as exc:
            await self._finish(Outcome(phase="Failed", reason=forks.REASON, message=str(exc)))
            return None
        self.live.forked_from = plan.status()
        return plan

    async def _start(self, spec: Any, fork: forks.ForkPlan | None = None) -> bool:
        """Start the workflow on a snapshot of ``spec``; False when the run ended instead."""
        revision = (fork.revision if fork is not None else None) or spec_revision(spec)
        try:
            run = run_input(
                self.namespace,
                self.tree,
                spec,
                name=self.name,
                uid=self.uid,
                input=fork.input if fork is not None else self.spec["input"],
                context=fork.context if fork is not None else dict(self.spec.get("context") or {}),
                max_steps=self.spec.get("maxSteps"),
                timeout_seconds=int(self.spec.get("timeoutSeconds") or 3600),
                budgets=self.spec.get("budgets"),
                revision=revision,
                fork=fork.fork if fork is not None else None,
            )
        except RunInputError as exc:
            await self._finish(Outcome(phase="Failed", reason="InvalidInput", message=str(exc)))
            return False
        queue = naming.task_queue(self.namespace, self.tree, spec.root)
        with metrics.reconcile_timer(KIND):
            # Pre-warm: a root agent scaled to zero gets a worker now, not at the next backlog poll.
            await self.ctx.autoscaler.prewarm(self.namespace, self.tree, spec.root)
            await self._retrying("start the workflow", lambda: self.ctx.temporal.start_run(run))
        metrics.RUNS_STARTED.inc()
        metrics.RECONCILES.labels(KIND, "started").inc()
        self.started = True
        self.live.running(self.workflow_id, revision, spec.root, now_iso())
        self._track()
        self._event(
            K8sEvent(
                "Normal",
                "Started",
                f"workflow {self.workflow_id} started on task queue {queue} (tree revision {revision})",
            )
        )
        if fork is not None:
            self._event(
                K8sEvent(
                    "Normal",
                    "Forked",
                    f"forked from run {fork.fork.name} ({fork.fork.workflow_id}): steps 1..{fork.fork.step} "
                    "are reused from its history",
                )
            )
        await self._write()
        return True

    async def _wait_tree(self, key: tuple[str, str]) -> None:
        waiter = asyncio.ensure_future(self.ctx.signals.wait(key))
        stop = asyncio.ensure_future(self.stopped.wait())
        timeout = TREE_RECHECK if self.due_in is None else min(TREE_RECHECK, max(self.due_in, 0.01))
        try:
            await asyncio.wait({waiter, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stop):
                task.cancel()

    def _started_at(self) -> str:
        return self.live.started_at or now_iso()

    # --- following ---------------------------------------------------------------------------------
    async def _follow(self, handle: Any) -> Outcome:
        """Observe progress -> plan (cancel?) -> act -> one coalesced status write, until the workflow ends."""
        hub = self.ctx.hub
        sub: Subscription | None = hub.subscribe(self.workflow_id) if hub.url else None
        outcome_task = asyncio.ensure_future(self._outcome(handle))
        stop_task = asyncio.ensure_future(self.stopped.wait())
        getter: asyncio.Future | None = None
        next_poll = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not outcome_task.done():
                self._check_stopped()
                # observe
                if getter is not None and getter.done():
                    self._apply_step(*getter.result())
                    getter = None
                if sub is not None:
                    while not sub.queue.empty():
                        self._apply_step(*sub.queue.get_nowait())
                if not hub.available and loop.time() >= next_poll:
                    next_poll = loop.time() + self.coalescer.interval
                    await self._poll_progress(handle)
                # plan -> act
                plan = plan_run(self._observe())
                if plan.action == "cancel":
                    self.cancel_sent = True
                    await self._retrying("cancel the workflow", lambda: self.ctx.temporal.cancel(self.workflow_id))
                    self._event(K8sEvent("Normal", plan.reason, plan.message))
                await self._sync_approvals()
                await self._send_budgets()
                # one status write
                await self._write()
                if sub is not None and getter is None:
                    getter = asyncio.ensure_future(sub.queue.get())
                waits = {outcome_task, stop_task} | ({getter} if getter is not None else set())
                timeout = IDLE_TICK if self.due_in is None else min(IDLE_TICK, max(self.due_in, 0.01))
                if not hub.available:
                    timeout = min(timeout, max(next_poll - loop.time(), 0.01))
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if getter is not None and getter.done():
                self._apply_step(*getter.result())
                getter = None
            if sub is not None:
                while not sub.queue.empty():
                    self._apply_step(*sub.queue.get_nowait())
            await self._sync_approvals()
            return outcome_task.result()
        finally:
            for task in (getter, stop_task):
                if task is not None:
                    task.cancel()
            if not outcome_task.done():
                outcome_task.cancel()
                with contextlib.suppress(BaseException):
                    await outcome_task
            if sub is not None:
                hub.unsubscribe(sub)

    async def _send_budgets(self) -> None:
        """``spec.budgets`` changed (``agent-tree budget``): hand them to the workflow (``set_budgets``)."""
        budgets = plain(self.body.get("spec") or {}).get("budgets")
        if budgets is None or budgets == self.sent_budgets or self.cancel_sent:
            return
        answer = await self._retrying(
            "send the budgets", lambda: self.ctx.temporal.set_budgets(self.workflow_id, dict(budgets))
        )
        self.sent_budgets = budgets
        if isinstance(answer, str):  # the workflow refused them: say why on the run
            self._event(K8sEvent("Warning", "BudgetsNotApplied", cut(answer, 300) or ""))

    async def _poll_progress(self, handle: Any) -> None:
        """Redis away: ask the workflow itself where it is."""
        before = self.live.current_agent
        for event in self.live.apply_progress(await self.ctx.temporal.progress(handle)):
            self._event(event)
        if self.live.current_agent != before:
            self.ctx.autoscaler.prewarm_soon(self.namespace, self.tree, self.live.current_agent)
        self._track()

    async def _outcome(self, handle: Any) -> Outcome:
        delays = iter(RETRY)
        while True:
            try:
                return await self.ctx.temporal.outcome(handle)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Temporal away: keep waiting for the result, it is durable
                delay = next(delays, RETRY[-1])
                self.logger.warning(
                    "waiting for the result of %s failed (%s); retrying in %ss", self.workflow_id, exc, delay
                )
                await asyncio.sleep(delay)

    def _apply_step(self, entry_id: str, step: Mapping[str, Any]) -> None:
        if step.get("type") == RUN_END or is_transient(step):
            return  # the result comes from the workflow itself; live model text is not progress
        event_ = step_event(dict(step))
        for event in self.live.apply_event(event_, entry_id):
            if event.reason == "Handoff" and self.live.handoffs <= self.announced:
                continue
            self._event(event)
        if event_.get("type") == AGENT_START:
            # A turn of this agent is queued: give it a worker now if it is scaled to zero.
            self.ctx.autoscaler.prewarm_soon(self.namespace, self.tree, event_.get("agent"))
            self._track()

    async def _sync_approvals(self) -> None:
        await approval_sync.sync(self.ctx, self.namespace, self.name, self.uid, self.live, self.ensured, self.logger)

    async def _close_approvals(self) -> None:
        await approval_sync.close(self.ctx, self.namespace, self.name, self.uid, self.live)

    def _track(self) -> None:
        """Tell the autoscaler where this run is (an agent with a run in progress is not idle)."""
        self.ctx.activity.set(self.uid, self.namespace, self.tree, self.live.current_agent)

    async def _finish(self, outcome: Outcome) -> None:
        now = now_iso()
        if outcome.result is not None:
            event = self.live.finish_with_result(outcome.result, now)
        else:
            event = self.live.finish_with_error(
                outcome.phase or "Failed", outcome.reason or "Failed", outcome.message or "", now
            )
        # The Event first: once the final status lands, kopf stops this daemon.
        self._event(event)
        await self._close_approvals()
        self.ctx.activity.drop(self.uid)
        metrics.RUNS_FINISHED.labels(self.live.phase).inc()
        metrics.RECONCILES.labels(KIND, "finished").inc()
        created = parse_iso(self.body["metadata"].get("creationTimestamp"))
        if created is not None:
            seconds = (dt.datetime.now(dt.UTC) - created).total_seconds()
            metrics.RUN_SECONDS.labels(self.live.phase).observe(max(0.0, seconds))
        await self._write(final=True)

    # --- TTL ---------------------------------------------------------------------------------------
    async def _expire(self) -> None:
        ttl = self.spec.get("ttlSecondsAfterFinished")
        finished = parse_iso(self.live.completed_at)
        if ttl is None or finished is None:
            return
        delay = (finished + dt.timedelta(seconds=int(ttl)) - dt.datetime.now(dt.UTC)).total_seconds()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), timeout=delay)
        self._check_stopped()
        await self._retrying(
            "delete the finished run", lambda: self.ctx.kube.delete("agentruns", self.namespace, self.name, self.uid)
        )

    # --- the one status write of a pass ----------------------------------------------------------------
    def _desired(self) -> dict[str, Any]:
        cfg = self.ctx.config
        return self.live.status(answer_max=cfg.answer_max_chars, max_bytes=cfg.status_max_bytes)

    async def _write(self, final: bool = False, retry: bool = True) -> None:
        """Write the summary as :func:`plan_write` decides (now, later, or not at all)."""
        loop = asyncio.get_running_loop()
        plan = plan_write(
            self.written,
            self._desired(),
            final=final,
            now=loop.time(),
            last_write=self.coalescer.last_write,
            interval=self.coalescer.interval,
            generation=self.body["metadata"].get("generation"),
        )
        self.due_in = plan.due_in
        if plan.patch is None:
            return
        patch = plan.patch

        async def call() -> Any:
            return await self.ctx.kube.patch_status("agentruns", self.namespace, self.name, patch)

        result = await (self._retrying("write the status", call) if retry else call())
        self.coalescer.wrote(loop.time())
        if result is None:
            raise Stopped  # the run is gone (deleted, or re-created under the same name)
        self.written.update(patch)

    # --- helpers -----------------------------------------------------------------------------------
    def _cancel_requested(self) -> bool:
        annotations = self.body["metadata"].get("annotations") or {}
        return annotations.get(CANCEL_ANNOTATION) == "true"

    def _check_stopped(self) -> None:
        if self.stopped.is_set():
            raise Stopped

    def _event(self, event: K8sEvent) -> None:
        try:
            kopf.event(self.body, type=event.type, reason=event.reason, message=event.message)
        except Exception as exc:  # events are best effort; never fail a run over one
            self.logger.debug("event %s not posted: %s", event.reason, exc)

    async def _retrying(self, what: str, call: Any) -> Any:
        """Run ``call()`` until it succeeds, with backoff; stops when the daemon is stopped."""
        delays = iter(RETRY)
        while True:
            self._check_stopped()
            try:
                return await call()
            except Stopped:
                raise
            except Exception as exc:  # Temporal or the API server away: the run is durable, keep trying
                delay = next(delays, RETRY[-1])
                self.logger.warning(
                    "cannot %s for %s/%s (%s); retrying in %ss", what, self.namespace, self.name, exc, delay
                )
                if self.live.phase == "Pending" and what in TEMPORAL_CALLS:
                    # The run really waits: say why (a failed write here is retried on the next pass).
                    address = self.ctx.config.settings.temporal_address
                    self.live.pending("TemporalUnavailable", f"waiting for Temporal at {address}: {exc}"[:300])
                    with contextlib.suppress(Exception):
                        await self._write(retry=False)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopped.wait(), timeout=delay)
