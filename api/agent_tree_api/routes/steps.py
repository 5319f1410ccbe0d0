"""A run's steps from PostgreSQL a page at a time, and its live events as Server-Sent Events."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from agent_tree.contract import RUN_STATUSES, ord_str, parse_ord
from agent_tree_api import sse
from agent_tree_api.auth import Caller
from agent_tree_api.deps import Services, caller, services
from agent_tree_api.errors import ApiError
from agent_tree_api.models import StepPage
from agent_tree_api.routes.common import PREFIX, history_call, resolve_run
from agent_tree_api.routes.runs import ERRORS, Name, Namespace
from agent_tree_api.views import run_view, step_item

router = APIRouter(prefix=PREFIX, tags=["steps"])
STEPS_DEFAULT, STEPS_MAX = 100, 1000


def encode_step_cursor(workflow_id: str, ord_: list[int], number: int) -> str:
    raw = json.dumps([workflow_id, ord_str(ord_), number], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_step_cursor(text: str, workflow_id: str) -> tuple[list[int], int]:
    """(ord of the last step of the previous page, its number); 400 naming ``cursor`` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        wf, position, number = json.loads(raw)
        after = parse_ord(position)
        if not isinstance(wf, str) or not isinstance(number, int) or number < 1 or not after:
            raise ValueError
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise ApiError.invalid(
            "cursor", "not a cursor of this listing: pass nextCursor of the previous page", 400
        ) from None
    if wf != workflow_id:
        raise ApiError.invalid("cursor", "this cursor belongs to another run's steps; start without a cursor", 400)
    return after, number


@router.get("/runs/{name}/steps", response_model=StepPage, responses=ERRORS)
async def list_steps(
    namespace: Namespace,
    name: Name,
    limit: Annotated[int, Query(ge=1, le=STEPS_MAX, description=f"Steps per page, 1..{STEPS_MAX}.")] = STEPS_DEFAULT,
    cursor: Annotated[str | None, Query(max_length=400, description="nextCursor of the previous page.")] = None,
    who: Caller = Depends(caller),
    svc: Services = Depends(services),
) -> StepPage:
    """The run's recorded steps in order (also after its AgentRun was deleted), keyset-paginated."""
    _, _, workflow_id = await resolve_run(svc, who, namespace, name)
    after, number = decode_step_cursor(cursor, workflow_id) if cursor else (None, 0)
    steps = await history_call(svc.history.steps(workflow_id, after=after, limit=limit + 1))
    page = steps[:limit]
    items = [step_item(number + i + 1, s) for i, s in enumerate(page)]
    more = len(steps) > limit
    return StepPage(
        items=items, nextCursor=encode_step_cursor(workflow_id, page[-1]["ord"], number + len(page)) if more else None
    )


@router.get(
    "/runs/{name}/events",
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": sse.DESCRIPTION}},
    response_class=StreamingResponse,
)
async def run_events(
    request: Request,
    namespace: Namespace,
    name: Name,
    since: Annotated[str | None, Query(max_length=200, description="Resume after this position (an event id).")] = None,
    last_event_id: Annotated[str | None, Header(max_length=200, description="Set by EventSource on reconnect.")] = None,
    who: Caller = Depends(caller),
    svc: Services = Depends(services),
) -> StreamingResponse:
    """The run as Server-Sent Events: a snapshot, every step after the position, live model text, ``end``."""
    position = last_event_id if last_event_id is not None else since
    field = "Last-Event-ID" if last_event_id is not None else "since"
    after: list[int] | None = None
    if position:
        try:
            after = parse_ord(position)
        except ValueError:
            raise ApiError.invalid(
                field, f"{position!r} is not an event id (a dotted path such as 3.1.2)", 400
            ) from None
    agentrun, row, workflow_id = await resolve_run(svc, who, namespace, name)
    snapshot = run_view(namespace, name, agentrun, row).model_dump(mode="json")
    finished = row is not None and row.get("status") in RUN_STATUSES
    stream = sse.events(svc, workflow_id, after, snapshot, finished=finished)
    return StreamingResponse(stream, media_type="text/event-stream", headers=sse.HEADERS)
