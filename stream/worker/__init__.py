"""The streaming worker: the Faust app (``app``), the processor that drives the pure cores
(``processor``), what it serves (``model``), its Redis store (``store``), metrics and dead letters."""
