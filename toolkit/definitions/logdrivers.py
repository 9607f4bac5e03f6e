"""The log drivers' names (spec §1.1 `log_driver`; conmon's `-l` values).

The one place they are spelled: `toolkit.definitions.model.LogDriver` takes its
values from here, and the state database stores them as these strings. `podunit
exec` and `podunit logs` compare and pass the strings without importing the model
(its import is ~10 ms of every such process, issue 6).
"""

JOURNALD = "journald"
K8S_FILE = "k8s-file"
PASSTHROUGH = "passthrough"
NONE = "none"
