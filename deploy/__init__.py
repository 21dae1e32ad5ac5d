"""How MIRAGE runs: embedded services for development and demos, configs, Triton repository."""
