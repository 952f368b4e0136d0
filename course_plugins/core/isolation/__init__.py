"""Isolated plugins: each plugin's code in a confined worker process, reached over a channel.

``host.IsolatedPlugin`` is the host's side (worker process, proxies, Platform API servicing);
``host_api`` the Platform API calls a worker may make and what of the site's objects it may
reach; ``worker`` the process it starts (confined by the sandbox's operating-system layers);
``remote_api`` what the plugin's ``api`` is in there; ``channel`` and ``wire`` the nested
request/reply protocol and what crosses it. Django-free, like the rest of ``core``.
"""

from __future__ import annotations

from course_plugins.core.isolation.channel import IsolatedPluginError, WorkerCrashed, WorkerTimeout

__all__ = ["IsolatedPluginError", "WorkerCrashed", "WorkerTimeout"]
