"""Every size bound and timeout of ``relay-client check``, named once."""

from __future__ import annotations

#: Seconds one network step may take unless ``--timeout`` says otherwise.
DEFAULT_TIMEOUT = 10.0

#: Seconds to establish a TCP (and TLS) connection, at most.
CONNECT_TIMEOUT = 10.0

#: Redirects followed for one fetch (the plugin host follows a few, not a chain).
MAX_REDIRECTS = 5

#: Largest plugin manifest read; real ones are a few hundred bytes.
MAX_MANIFEST_BYTES = 256 * 1024

#: Largest OpenAPI document read.
MAX_OPENAPI_BYTES = 4 * 1024 * 1024

#: Largest logo read (the check fails well below this, at ``MAX_LOGO_SIZE``).
MAX_LOGO_BYTES = 8 * 1024 * 1024

#: A logo bigger than this is not "sane": the store shows it at 512x512 at most.
MAX_LOGO_SIZE = 1024 * 1024

#: Largest body read from any other answer (preflight, server probe, OAuth metadata).
MAX_SMALL_BYTES = 256 * 1024

#: Largest MCP answer (JSON body or a whole SSE response) read.
MAX_MCP_BYTES = 4 * 1024 * 1024

#: Largest single SSE event (the official Python SDK client's default).
MAX_SSE_EVENT_BYTES = 1024 * 1024

#: Most SSE events read from one response.
MAX_SSE_EVENTS = 1000

#: Longest an SSE response is kept open after its JSON-RPC answer arrived.
SSE_LINGER = 1.0

#: Seconds the standalone GET stream is held open to see whether its head arrives.
GET_STREAM_PROBE = 2.0

#: Most operations sent a CORS preflight.
MAX_PREFLIGHTS = 5

#: Most offenders named in one report line.
MAX_NAMED = 5

#: Most nodes walked in a parsed OpenAPI document (YAML aliases can make a small file huge).
MAX_DOCUMENT_NODES = 200_000
