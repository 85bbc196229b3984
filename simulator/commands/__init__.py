"""Python implementations of the PowerShell functions in ``worker/powershell/*.ps1``.

One module per ``.ps1`` file. Each function is registered in :data:`REGISTRY` under the same
name, with the same parameter names, mandatory set and switches as its ``param()`` block;
``tests/contract`` checks that. Behaviour (output objects, warnings, terminating error ids and
messages) must match the PowerShell: a change to one is a change to both.
"""

import simulator.commands.certificates  # noqa: F401 - importing registers Certificates.ps1
from simulator.commands import enrollment, iis, inventory, sql  # noqa: F401 - registers Enrollment/Iis/Sql.ps1
from simulator.commands.inventory import store_not_found
from simulator.commands.registry import REGISTRY

__all__ = ["REGISTRY", "inventory", "store_not_found"]
