"""Relay fleet: several relay nodes sharing tunnel names and tokens through Redis.

Nothing here is imported unless ``--cluster`` is given, so a single relay keeps its
memory footprint. Modules: route (RemoteRoute), registry (RedisRegistry),
tokens (RedisTokenStore), redisconn (connection health), hop/internal (forwarding).
"""
