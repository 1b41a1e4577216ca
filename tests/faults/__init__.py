"""Fault tests: agent, local server and relay killed, network stalled, through real processes; resources checked after."""
