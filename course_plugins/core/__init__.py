"""The Django-free engine: hooks, events, advice, sandbox, manifests and the plugin loader.

It imports nothing from the rest of ``course_plugins`` but ``exceptions`` (a test checks).
"""

__version__ = "0.1.0"
"""The version of course_plugins (``platform`` in a plugin.yaml is checked against it)."""
