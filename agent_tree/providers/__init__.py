"""Model providers: how an agent with ``model:`` in its spec runs.

- :mod:`.openai_chat`: the model agent's loop, a pure state machine (both executors drive it);
  :mod:`.replies` and :mod:`.routing` are its pure helpers (final replies, a supervisor's routing).
- :mod:`.openai_client`: the OpenAI-compatible HTTP client and the API key / endpoint of an agent.
- :mod:`.embedded`: the in-process behaviour of a model agent (the loop with direct calls).

This package imports none of them, so the workflow sandbox loads only the pure loop.
"""
