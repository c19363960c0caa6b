"""``make run``: sample traffic, and a demonstration of the service end to end."""
