"""Tasks: the Task model, the inventory file (`$FLOW_HOME/tasks.yaml`) and the importers.

```python
from flow.fleet import Inventory, node_params
inventory = Inventory.from_config(config)
task = inventory.resolve("train-a")            # id, name, or unique id prefix
params = [node_params(n) for n in task.nodes]  # -> flow.ssh.SSHParams
```
"""

from flow.fleet.access import gpud_address, node_params, pick_node
from flow.fleet.importers import ImportedHost, read_hosts_file, read_ssh_config
from flow.fleet.instance_types import GpuSpec, lookup_instance_type
from flow.fleet.inventory import Inventory
from flow.fleet.model import FieldError, Node, Task, new_task_id, parse_node_spec

__all__ = [
    "FieldError",
    "GpuSpec",
    "ImportedHost",
    "Inventory",
    "Node",
    "Task",
    "gpud_address",
    "lookup_instance_type",
    "new_task_id",
    "node_params",
    "parse_node_spec",
    "pick_node",
    "read_hosts_file",
    "read_ssh_config",
]
