"""Why the agent stopped or paused: fatal (say it once, exit) or retryable."""

from __future__ import annotations


class AgentError(Exception):
    """Base: the message is the one line the user sees."""

    exit_code = 1


class FatalError(AgentError):
    """Retrying cannot help (bad token, name taken, wrong version, bad option)."""


class AuthError(FatalError):
    """The relay rejected the token."""

    exit_code = 3


class NameError_(FatalError):
    """The requested subdomain is invalid, reserved or held by another agent."""

    exit_code = 4


class RetryableError(AgentError):
    """The relay was unreachable or the connection broke; try again later."""


class RelayBusyError(RetryableError):
    """The relay answered but cannot take a tunnel right now (e.g. its fleet's Redis is down).

    Unlike an unreachable relay, this is no sign of a wrong --server: even an agent that
    never connected keeps retrying with backoff.
    """
