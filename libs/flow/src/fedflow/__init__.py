"""fedflow: fedmq's job runtime library.

Pipelines (`pipeline`), machine-readable component protocols (`protocol`), the Federation API
components talk through (`federation`, `bus_federation`), the component context with its
checkpoint store and metrics writer (`context`, `checkpoints`, `metrics`), party tables
(`tables`), the components themselves (`components`), the task runner shared by the worker
service and standalone mode (`runner`), and the standalone runner (`standalone`).
"""
