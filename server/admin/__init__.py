"""authq-admin: operator commands that work on Redis directly (audit trail first)."""
