"""The site's runtime layer: the runtime, the cross-process stamp, scheduling, organizations."""
