"""Personal accounts (R11, R12, R13): roles, passwords, login tokens."""
