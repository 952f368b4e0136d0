"""REST API (DRF) of course_plugins."""
