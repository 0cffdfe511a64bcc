"""Development tools: starting Redis for tests and CI, the demo."""
