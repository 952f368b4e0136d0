"""The Django-free engine: hooks, events, advice, sandbox, manifests and the plugin loader."""
