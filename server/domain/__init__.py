"""Business rules with no I/O: states, priority, money, and
the request records. Unit-tested without a server."""
