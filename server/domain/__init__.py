"""Business rules with no I/O: states, priority, money, the business catalog and
the request records. Unit-tested without a server."""
