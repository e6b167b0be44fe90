"""What the operator sees: rich renderables (the fleet table, the task detail, the history) and
the `--json` documents. The only package besides `flow.cli` that imports rich; the library
(`flow.health`, `flow.fleet`, `flow.ssh`) never imports it, as nvitop keeps its `api/` apart
from its UI.

Modules: `render` (fleet, task and history views), `gpu_table` (the per-GPU table that fits the
terminal), `summary` (what the views say, computed without rich), `documents` (the versioned
`--json` documents, docs/json.md; they import no rich).
"""
