"""The fault and load suite of agent-tree (docs/reliability.md): ``python bench/faults.py``.

Scenarios kill workers and the operator, restart PostgreSQL, Redis, Temporal and the kube-apiserver,
and push runs through the operator, counting runs completed and lost, duplicated steps and side effects,
and the seconds each fault took to recover from. ``tests/faults`` runs reduced sizes of the same code.
"""

import sys
from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent
REPO = SUITE_DIR.parents[1]
# fault_agents (imported by worker processes too), hack/platformlib, the integration tests' services
for _path in (SUITE_DIR, REPO / "hack", REPO / "tests" / "integration"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
