"""The live path's pure cores: wire schema, windower, micro-batcher, lab selection, alert policy,
technical alarms and admission. Plain classes and functions with injected clocks: no Faust, no
sockets, no Redis (the worker in ``stream.worker`` wires them up)."""
