"""Health checks the agent runs, one module per kind."""
