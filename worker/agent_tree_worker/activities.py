"""Activities: history writes, the planner, Python agent turns, model calls and tool calls.

One class with injected clients (a :class:`HistoryStore` or None, a :class:`StepStream`). Every
activity first writes the steps the workflow piggybacked on it, so a step reaches PostgreSQL (and
Redis) as soon as the next activity of the run starts. Writes are idempotent, so retries are safe.
"""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from agent_tree import approval_gate, ledger, policy, registry, usage
from agent_tree.compiler import CompiledTree, CompileError, compile_tree
from agent_tree.contract import APPROVAL_DECIDED, MODEL_USAGE, TOOL_END, TOOL_START, ord_str
from agent_tree.events import event_hooks
from agent_tree.models import HandoffResult, ToolResult
from agent_tree.node import AgentNode, error_message
from agent_tree.orchestrator import plan_thought, plan_with_usage
from agent_tree.providers import embedded, openai_client, replies, routing
from agent_tree.spec import AgentSpec, AgentTreeSpec
from agent_tree.turns import run_turn
from agent_tree_worker import deltas, metrics, payloads
from agent_tree_worker import inputs as t
from agent_tree_worker.forks import Forks
from agent_tree_worker.python_approvals import NEEDS_APPROVAL, DivergedTurn, DurableGate, NeedsApproval
from agent_tree_worker.store import HistoryStore
from agent_tree_worker.stream import StepStream
from agent_tree_worker.tool_runs import execute_tool, find_node, heartbeating, once, tool_timeout

log = logging.getLogger(__name__)

NON_RETRYABLE_STATUS = {400, 401, 403, 404, 409, 422}


class RetryTurn(BaseException):
    """History is unreachable in the middle of a Python agent's turn.

    A BaseException so that ``run_turn`` (which turns an agent's exceptions into a failed handoff)
    lets it through: the activity fails and Temporal retries it; completed tool calls come back
    from the journal.
    """


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _failing_planner(message: str):
    def planner(user_input: str) -> dict[str, Any]:
        raise LookupError(message)

    return planner


def budget_exhausted(stop: ledger.BudgetStop, used: policy.Usage) -> ApplicationError:
    """The error of a Python turn a budget stopped: which budget, and what the turn used until then
    (the workflow counts it, then fails the run or waits for the budget to be raised)."""
    return ApplicationError(
        stop.exhausted.message,
        stop.exhausted.to_dict(),
        used.to_dict(),
        type=policy.BUDGET_EXHAUSTED,
        non_retryable=True,
    )


class Activities:
    """The activities of one worker process (register ``all()`` on the worker)."""

    def __init__(self, store: HistoryStore | None, stream: StepStream, *, identity: str = "worker") -> None:
        self.store = store
        self.stream = stream
        self.identity = identity
        self.forks = Forks(store)
        self._compiled: dict[str, tuple[AgentTreeSpec, CompiledTree | CompileError]] = {}

    def all(self) -> list[Any]:
        return [
            self.start_run,
            self.finish_run,
            self.record_steps,
            self.reuse_decision,
            self.plan,
            self.python_turn,
            self.model_call,
            self.tool_call,
        ]

    # --- helpers ----------------------------------------------------------------------------

    async def write(self, run_id: str, steps: list[t.Step]) -> None:
        """Write steps to PostgreSQL (raises when it stays unreachable), then publish them (never raises)."""
        if not steps:
            return
        steps = payloads.scrub(steps)  # e.g. a Python agent's event quoting a NUL: recorded, not refused
        if self.store is not None:
            steps = await self.forks.mark(run_id, steps)
        stored = await self.store.write_steps(run_id, steps) if self.store else steps
        metrics.record_steps(stored)
        await self.stream.publish(run_id, stored)

    def tree(self, spec: dict[str, Any]) -> tuple[AgentTreeSpec, CompiledTree]:
        """The compiled tree of a spec snapshot (cached per content): entrypoints import once per process."""
        key = payloads.blob_id(payloads.dumps(spec))
        if key not in self._compiled:
            model = AgentTreeSpec.model_validate(spec)
            try:
                compiled: CompiledTree | CompileError = compile_tree(model)
            except CompileError as exc:
                compiled = exc
            self._compiled[key] = (model, compiled)
        model, compiled = self._compiled[key]
        if isinstance(compiled, CompileError):
            raise ApplicationError(str(compiled), type="CompileError", non_retryable=True)
        return model, compiled

    async def shrink(self, run_id: str, result: dict[str, Any]) -> dict[str, Any]:
        """A ToolResult dict whose large output is stored as a blob and replaced by its reference."""
        if self.store is not None and payloads.json_size(result.get("output")) > payloads.BLOB_THRESHOLD:
            return {**result, "output": await self.store.put_blob(run_id, result["output"])}
        return result

    # --- history ------------------------------------------------------------------------------

    @activity.defn(name=t.START_RUN)
    async def start_run(self, inp: t.StartRunInput) -> None:
        if self.store:
            await self.store.start_run(inp.run, self.identity)
        await self.write(inp.run["workflow_id"], inp.steps)

    @activity.defn(name=t.FINISH_RUN)
    async def finish_run(self, inp: t.FinishRunInput) -> None:
        await self.write(inp.run_id, inp.steps)
        if self.store:
            await self.store.finish_run(inp.run_id, payloads.scrub(inp.result), self.identity)
        await self.stream.publish(
            inp.run_id, [], final={"status": inp.result["status"], "answer": inp.result["answer"]}
        )

    @activity.defn(name=t.RECORD_STEPS)
    async def record_steps(self, inp: t.StepsInput) -> None:
        await self.write(inp.run_id, inp.steps)
        for step in inp.steps:  # a decision is a recorded call too: a fork of the run reuses it
            if step["type"] == APPROVAL_DECIDED:
                await self.forks.record(inp.run_id, step["ord"], "approval", step["data"])
        if self.store:
            for row in inp.audit or ():
                key = f"{inp.run_id}:{row['key']}"
                await self.store.audit(key, inp.run_id, row["actor"], row["action"], row.get("details") or {})

    @activity.defn(name=t.REUSE_DECISION)
    async def reuse_decision(self, inp: t.ReuseDecisionInput) -> dict[str, Any] | None:
        """A fork's approval at or before its fork step: the source's decision at the same ord."""
        done, recorded = await self.forks.reuse(inp.run_id, inp.ord, "approval", inp.tool)
        if not done:
            return None
        if recorded.get("tool") != inp.tool:
            raise ApplicationError(
                f"fork: the source decided an approval of tool {recorded.get('tool')!r} at step ord {inp.ord} where "
                f"this run asks for {inp.tool!r}; fork from an earlier step",
                type="ForkDiverged",
                non_retryable=True,
            )
        return recorded

    # --- agents -------------------------------------------------------------------------------

    @activity.defn(name=t.PLAN)
    async def plan(self, inp: t.PlanInput) -> dict[str, Any] | None:
        await self.write(inp.run_id, inp.steps)
        await self.forks.remember_spec(inp.spec)
        done, recorded = await self.forks.reuse(inp.run_id, inp.ord, "plan", inp.agent or "planner")
        if done:
            return recorded
        spec = AgentTreeSpec.model_validate(inp.spec)
        if inp.agent is not None:
            agent = spec.agent(inp.agent)
            planner = embedded.make_router(agent, [(c, spec.agent(c).description) for c in agent.children])
        else:
            try:
                planner = registry.resolve(spec.planner)  # type: ignore[arg-type]
            except registry.EntrypointError as exc:
                planner = _failing_planner(f"spec.planner: {exc}")
        async with heartbeating():
            plan, calls = await plan_with_usage(planner, inp.input)
        # The thought is rendered here: Temporal's JSON converter sorts dict keys on the way back.
        # ``usage``: the routing / planner model calls, for model_usage steps and the run's tokens.
        result = None if plan is None else {"plan": plan, "thought": plan_thought(plan), "usage": calls}
        await self.forks.record(inp.run_id, inp.ord, "plan", result)
        return result

    @activity.defn(name=t.PYTHON_TURN)
    async def python_turn(self, inp: t.PythonTurnInput) -> dict[str, Any]:
        """One turn of a Python agent, its tool calls journaled: on a retry, calls completed by an
        earlier attempt are answered from PostgreSQL instead of running again."""
        await self.write(inp.run_id, inp.steps)
        await self.forks.remember_spec(inp.spec)
        spec, compiled = self.tree(inp.spec)
        node = find_node(compiled, inp.agent)
        if node is None:
            raise ApplicationError(f"the tree has no agent {inp.agent!r}", type="UnknownAgent", non_retryable=True)
        agent_spec = spec.agent(inp.agent)
        info = activity.info()
        journal_key = inp.journal_key or f"{info.workflow_run_id}/{info.activity_id}"
        events = itertools.count(1)
        calls = itertools.count(1)
        usages = itertools.count(1)
        last_event = [0]
        unwritten: list[t.Step] = []

        async def sink(event: dict[str, Any], ord_: list[int] | None = None) -> None:
            if ord_ is None:
                last_event[0] = next(events)
                ord_ = [*inp.ord, last_event[0]]
            step = {
                "ord": ord_,
                "type": event["type"],
                "agent": event.get("agent") or inp.agent,
                "data": event,
                "ts": _now(),
            }
            try:
                await self.write(inp.run_id, [step])
            except Exception as exc:  # written again at the end of the turn; never lost
                log.warning("step %s not written yet: %s", step["ord"], exc)
                unwritten.append(step)

        async def journaled(owner: AgentNode, name: str, args: dict[str, Any]) -> ToolResult:
            seq = next(calls)
            # The call's key: its tool_end event (the hooks number it next); a quiet turn has no events.
            key = [*inp.ord, 0, seq] if inp.quiet else [*inp.ord, last_event[0] + 1]
            forked, recorded = False, None
            try:
                if self.store is not None:
                    done = await self.store.journal_get(journal_key, seq)
                    if done is not None and done["tool"] == name:
                        return ToolResult.model_validate(await self.store.resolve(done["result"]), strict=False)
                    forked, recorded = await self.forks.reuse(inp.run_id, key, "tool", name)
                if forked and self.store is not None:
                    return ToolResult.model_validate(await self.store.resolve(recorded), strict=False)

                async def execute() -> ToolResult:
                    result = await execute_tool(owner, name, args, tool_timeout(agent_spec, name))
                    if self.store is not None:
                        stored = await self.shrink(inp.run_id, result.model_dump(mode="json"))
                        await self.forks.record(inp.run_id, key, "tool", stored)
                        await self.store.journal_put(
                            journal_key,
                            seq,
                            run_id=inp.run_id,
                            agent=owner.name,
                            tool=name,
                            args=args,
                            result=stored,
                            attempt=info.attempt,
                        )
                    return result

                # One execution per call in this process, also when a retry of this turn comes while an
                # abandoned attempt's call still runs (tool_runs.once); the tool sees the call's key.
                return await once(f"{info.workflow_id}/{journal_key}/{seq}", execute)
            except ApplicationError:
                raise
            except Exception as exc:
                raise RetryTurn(f"history unavailable during tool call {seq} ({name}): {error_message(exc)}") from exc

        async def model_usage(record: dict[str, Any]) -> None:
            # A model agent run in-process as this agent's tool: its calls are steps of the run too.
            # Numbered under the last event (the tool_start), not with the events: a retry whose tool
            # call comes from the journal makes no model call, and must not shift later events' ords.
            await sink({"type": MODEL_USAGE, **record}, [*inp.ord, last_event[0], next(usages)])

        # The run's budgets: the turn's in-process tool calls, agents called as tools and model calls
        # are checked against what the run has left (the same policy as the workflow's checks).
        budget = inp.budget or {}
        run_ledger = ledger.Ledger(budget["budgets"], policy.Usage.from_dict(budget["used"])) if budget else None
        before = run_ledger.used if run_ledger is not None else policy.Usage()
        gate = DurableGate(inp.decisions or {})
        try:
            async with heartbeating():
                with usage.collecting(model_usage), approval_gate.gated(gate), ledger.using(run_ledger):
                    handoff = await run_turn(
                        node,
                        inp.input,
                        inp.context,
                        hooks=None if inp.quiet else event_hooks(sink),
                        plan=inp.plan,
                        step=inp.step,
                        tool_runner=journaled,
                        max_steps=inp.max_steps,
                    )
        except RetryTurn as exc:
            raise ApplicationError(str(exc), type="HistoryUnavailable") from None
        except DivergedTurn as exc:
            raise ApplicationError(str(exc), type="DivergedTurn", non_retryable=True) from None
        except NeedsApproval as stop:
            if unwritten:
                await self.write(inp.run_id, unwritten)
            # The approval's steps go under the last event written (the call's tool_start comes after).
            return {NEEDS_APPROVAL: {**stop.ask, "after_event": last_event[0]}}
        except ledger.BudgetStop as stop:
            if unwritten:
                await self.write(inp.run_id, unwritten)
            assert run_ledger is not None
            raise budget_exhausted(stop, run_ledger.used.minus(before)) from None
        if unwritten:
            await self.write(inp.run_id, unwritten)
        data = await self.handoff_for_history(inp.run_id, handoff.model_copy(update={"to_agent": inp.to_agent}))
        if run_ledger is not None:
            data[t.BUDGET_USED] = run_ledger.used.minus(before).to_dict()
        return data

    async def handoff_for_history(self, run_id: str, handoff: HandoffResult) -> dict[str, Any]:
        """The handoff as it may travel through Temporal: large tool outputs as references, and a
        failed handoff instead of one too large to carry."""
        data = handoff.model_dump(mode="json")
        data["traces"]["tool_results"] = [await self.shrink(run_id, r) for r in data["traces"]["tool_results"]]
        size = payloads.json_size({"summary": data["summary"], "payload": data["payload"]})
        if size > payloads.MAX_HANDOFF_BYTES:
            data.update(
                status="failed",
                payload={},
                summary=(
                    f"agent {handoff.from_agent!r} handed back {size} bytes of summary and payload; the limit is "
                    f"{payloads.MAX_HANDOFF_BYTES}: store large results and return a reference"
                ),
            )
        return data

    @activity.defn(name=t.MODEL_CALL)
    async def model_call(self, inp: t.ModelCallInput) -> dict[str, Any]:
        """One Chat Completions call; a large reply is stored and comes back as a reference."""
        await self.write(inp.run_id, inp.steps)
        await self.forks.remember_spec(inp.spec)
        done, recorded = await self.forks.reuse(inp.run_id, inp.ord, "model", inp.agent)
        if done:
            return recorded
        spec = AgentTreeSpec.model_validate(inp.spec)
        agent = spec.agent(inp.agent)
        messages = [await self._resolve_message(m) for m in inp.messages]
        try:
            if inp.router:
                tools = routing.router_tools([(c, spec.agent(c).description) for c in agent.children])
            else:
                tools = openai_client.tool_definitions(agent)
            live = self.live_text(inp, agent)
            try:
                async with heartbeating():
                    with metrics.model_call(agent.name, getattr(agent.model, "name", "") or "") as call:
                        # NUL and lone surrogates in a reply could never be recorded (payloads.scrub).
                        response = payloads.scrub(
                            await openai_client.call_model(
                                agent, messages, tools, max_retries=0, on_delta=live.add if live else None
                            )
                        )
                        call.usage = response.get("usage") or {}
            finally:
                if live is not None:
                    await live.close()
        except (openai_client.ModelConfigError, registry.EntrypointError) as exc:
            raise ApplicationError(str(exc), type="ModelConfigError", non_retryable=True) from None
        except Exception as exc:
            # The endpoint's words may quote the API key (some servers echo a wrong one in their 401):
            # the key is cut out of the error before it reaches the history, the status, Events or logs.
            status = getattr(exc, "status_code", None)
            if status in NON_RETRYABLE_STATUS:
                raise ApplicationError(
                    openai_client.redact(
                        agent, f"the model endpoint refused the request ({status}): {error_message(exc)}"
                    ),
                    type="ModelRequestError",
                    non_retryable=True,
                ) from None
            raise ApplicationError(openai_client.redact(agent, str(exc)), type=type(exc).__name__) from None
        if not response["tool_calls"] and not inp.router:
            response["final"] = replies.interpret_final(agent.outputSchema, response["content"])
        if self.store is not None and payloads.json_size(response["content"]) > payloads.BLOB_THRESHOLD:
            response["content"] = await self.store.put_blob(inp.run_id, response["content"])
        await self.forks.record(inp.run_id, inp.ord, "model", response)
        return response

    def live_text(self, inp: t.ModelCallInput, agent: AgentSpec) -> deltas.Coalescer | None:
        """The call's text while it is generated, to the run's stream (its key: the call's fork key)."""
        if inp.ord:
            call = ord_str(inp.ord)
        else:
            info = activity.info()
            call = f"{info.workflow_run_id}/{info.activity_id}"
        return deltas.live_text(self.stream, inp.run_id, agent, call)

    async def _resolve_message(self, message: dict[str, Any]) -> dict[str, Any]:
        content = message.get("content")
        if self.store is None or not payloads.is_ref(content):
            return message
        value = await self.store.get_blob(content)
        return {**message, "content": value if isinstance(value, str) else payloads.dumps(value)}

    @activity.defn(name=t.TOOL_CALL)
    async def tool_call(self, inp: t.ToolCallInput) -> dict[str, Any]:
        """One tool call of a model agent, journaled like a Python agent's; writes tool_start/tool_end."""
        start = {
            "ord": inp.ord_start,
            "type": TOOL_START,
            "agent": inp.agent,
            "data": {"type": TOOL_START, "tool": inp.tool, "args": inp.args},
            "ts": _now(),
        }
        await self.write(inp.run_id, inp.steps if inp.quiet else [*inp.steps, start])
        await self.forks.remember_spec(inp.spec)
        spec, compiled = self.tree(inp.spec)
        node = find_node(compiled, inp.agent)
        if node is None:
            raise ApplicationError(f"the tree has no agent {inp.agent!r}", type="UnknownAgent", non_retryable=True)
        info = activity.info()
        journal_key = f"{info.workflow_run_id}/{info.activity_id}"
        done = await self.store.journal_get(journal_key, 1) if self.store else None
        forked, recorded = await self.forks.reuse(inp.run_id, inp.ord_end, "tool", inp.tool)
        if done is not None:
            result = done["result"]
        elif forked:
            result = recorded
        else:

            async def execute() -> dict[str, Any]:
                tool_result = await execute_tool(
                    node, inp.tool, inp.args, tool_timeout(spec.agent(inp.agent), inp.tool)
                )
                result = await self.shrink(inp.run_id, tool_result.model_dump(mode="json"))
                if self.store is not None:
                    await self.store.journal_put(
                        journal_key,
                        1,
                        run_id=inp.run_id,
                        agent=inp.agent,
                        tool=inp.tool,
                        args=inp.args,
                        result=result,
                        attempt=info.attempt,
                    )
                return result

            # One execution per call in this process, joined by a retry that comes while it runs.
            async with heartbeating():
                result = await once(f"{info.workflow_id}/{journal_key}/1", execute)
        await self.forks.record(inp.run_id, inp.ord_end, "tool", result)
        if not inp.quiet:
            end = {
                "ord": inp.ord_end,
                "type": TOOL_END,
                "agent": inp.agent,
                "ts": _now(),
                "data": {
                    "type": TOOL_END,
                    "tool": inp.tool,
                    "status": result["status"],
                    "output": result.get("output"),
                    "error": result.get("error"),
                },
            }
            await self.write(inp.run_id, [end])
        return result
