"""Tools for demos and tests; nothing here runs inside the server."""
