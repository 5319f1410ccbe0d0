"""What a model agent's replies mean: a final reply as a handoff (checked against ``outputSchema``),
and a tool result as the text the model sees. Pure; the chat loop (:mod:`.openai_chat`) uses them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agent_tree import output_schema

HANDOFF_STATUSES = ("ok", "needs_more_info", "failed")
SUMMARY_LIMIT = 4000
MAX_OUTPUT_BYTES = 256 * 1024


def tool_message_content(result: dict[str, Any]) -> Any:
    """What the model sees of a tool result: its output as text/JSON, or ``{"error": ...}``."""
    if result.get("status") == "error":
        return json.dumps({"error": result.get("error")})
    if result.get("status") == "rejected":  # an approval refused it: the model reads who and why
        return json.dumps({"status": "rejected", "error": result.get("error")})
    output = result.get("output")
    if isinstance(output, dict) and "$blob" in output:
        return output  # a stored large result, resolved by the caller just before the model call
    if isinstance(output, str):
        return output
    try:
        return json.dumps(output, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return json.dumps({"error": f"the tool returned a value that is not JSON ({type(output).__name__}): {exc}"})


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _parse_json(text: str) -> tuple[Any, str | None]:
    match = _FENCE.match(text.strip())
    body = match.group(1) if match else text
    try:
        return json.loads(body), None
    except ValueError as exc:
        return None, str(exc)
    except RecursionError:  # e.g. "[[[[..." thousands deep: not a reply anyone can use
        return None, "the JSON is nested too deeply"


def truncate(text: str, limit: int = SUMMARY_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more characters]"


def interpret_final(schema: dict[str, Any] | None, content: Any) -> dict[str, Any]:
    """A final reply as ``{"status", "summary", "payload", "errors"}``; ``errors`` lists schema violations.

    Without an outputSchema a reply ``{"status": "needs_more_info"|"failed"|"ok", "summary": ..., "payload": {...}}``
    sets the handoff status; any other reply is an ``ok`` with the text as summary.
    """
    text = content if isinstance(content, str) else ""
    parsed, parse_error = _parse_json(text) if text.strip() else (None, "the reply is empty")
    errors: list[str] = []
    status, summary, payload = "ok", truncate(text), parsed if isinstance(parsed, dict) else {}
    if schema is not None:
        if not isinstance(parsed, dict):
            why = parse_error or f"it is a JSON {type(parsed).__name__}"
            errors.append(f"the reply must be a JSON object: {why}")
        else:
            errors.extend(output_schema.validation_errors(schema, parsed))
            if isinstance(parsed.get("summary"), str):
                summary = truncate(parsed["summary"])
    elif (
        isinstance(parsed, dict) and parsed.get("status") in HANDOFF_STATUSES and isinstance(parsed.get("summary"), str)
    ):
        status, summary = parsed["status"], truncate(parsed["summary"])
        payload = (
            parsed["payload"]
            if isinstance(parsed.get("payload"), dict)
            else {k: v for k, v in parsed.items() if k not in ("status", "summary")}
        )
    size = len(json.dumps(payload, default=str))
    if size > MAX_OUTPUT_BYTES:
        errors.append(f"the output is {size} bytes of JSON; the limit is {MAX_OUTPUT_BYTES}")
        payload = {}
    return {"status": status, "summary": summary, "payload": payload, "errors": errors}
