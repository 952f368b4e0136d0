"""The site's runtime layer: the runtime, the cross-process stamp, scheduling, organizations.

Imports run one way: ``core`` <- ``api`` <- ``site`` <- entry points (admin, REST, tasks, ...).
"""
