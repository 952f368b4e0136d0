"""Platform API handed to plugins."""
