"""A small ACME (RFC 8555) client for asyncio: account, orders, HTTP-01 / TLS-ALPN-01, finalize, download.

``jws`` signs requests (ES256, no I/O); ``client`` speaks the protocol over
aiohttp (nonces, badNonce retries, problem documents); ``challenges`` holds
the answers the relay's listeners give while a CA validates; ``issuer``
runs one order from start to certificate for ``ondemand``.
"""
