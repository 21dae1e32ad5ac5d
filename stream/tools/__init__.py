"""Tools around the live path: the demo, live-vs-offline validation, the gateway replay and the load and broker benches."""
