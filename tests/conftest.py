"""Makes hack/platformlib importable: `from platformlib import ensure_up` (see docs/development.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
