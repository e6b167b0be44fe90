"""Installing GPUd and the flow metrics collector on nodes (docs/install.md).

```python
from flow.health.install import InstallOptions, startup_script
options = InstallOptions.from_config(config, package=None)
print(startup_script(options))            # a POSIX sh script for cloud-init or any boot hook
```
- `options`: what a run is told (GPUd version and source, listen address, collector settings);
- `units`: the files it writes (GPUd flags, both systemd units, the 0600 env file);
- `script`, `uninstall`, `status`: the three generated scripts;
- `report`: reading a script's output; `remote`: running scripts on many nodes over SSH;
- `layout`: where everything lives on a node.
"""

from flow.health.install.options import (
    GPUD_INSTALLER_URL,
    GpudSource,
    InstallOptions,
    default_package_spec,
    read_token_file,
)
from flow.health.install.remote import (
    REMOTE_COMMAND,
    ScriptRunner,
    Target,
    read_statuses,
    run_scripts,
    ssh_runner,
)
from flow.health.install.report import NodeReport, StepReport, parse_report
from flow.health.install.script import startup_script
from flow.health.install.status import NodeStatus, parse_status, status_script
from flow.health.install.uninstall import uninstall_script

__all__ = [
    "GPUD_INSTALLER_URL",
    "REMOTE_COMMAND",
    "GpudSource",
    "InstallOptions",
    "NodeReport",
    "NodeStatus",
    "ScriptRunner",
    "StepReport",
    "Target",
    "default_package_spec",
    "parse_report",
    "parse_status",
    "read_statuses",
    "read_token_file",
    "run_scripts",
    "ssh_runner",
    "startup_script",
    "status_script",
    "uninstall_script",
]
