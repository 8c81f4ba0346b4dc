"""Everything that talks to Redis: key names, the Lua scripts, the queue store."""
