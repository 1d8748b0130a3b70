"""fedflow: fedmq's job runtime library.

Two halves. The light descriptors (`descriptors`: pipelines, params, declared protocols, the
component catalogue), importable without numpy, fedcrypto or any component's code; and the
runtime: the components themselves (`components`, one package each), the kit they are written
with (`kit`), the Federation API components talk through (`federation`, `bus_federation`), the
component context with its checkpoint store and metrics writer (`context`, `checkpoints`,
`metrics`), party tables (`tables`), the task runner shared by the worker service and
standalone mode (`runner`), and the standalone runner (`standalone`).
"""
