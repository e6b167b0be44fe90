"""The fleet sweep over SSH: every node's GPUd read through its tunnel, concurrently, each under
its own deadline, into scored snapshots.

Modules: `checker` (`Checker`: targets, the SSH pool, per-node deadlines, failure classes,
kept sessions for `--watch` and `serve`), `shards` and `shard_worker` (a sweep shared among
worker processes), `history` (a task's history fetched from its nodes' collector stores). It
may import `ssh`, `fleet`, `gpud`, `storage`, `scoring` and `snapshot`; never `flow.cli` or
`flow.views`. Nothing is imported here, so that `flow --help` loads no SSH stack.
"""
