"""The control plane: a FastAPI application (``agent-tree api``) over the AgentTree and AgentRun resources.

Writes go to the Kubernetes API with the caller's own bearer token; reads of history come from
PostgreSQL and live progress from Redis, both authorized by a SubjectAccessReview. See docs/api.md.
"""
