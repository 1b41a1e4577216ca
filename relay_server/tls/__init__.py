"""HTTPS for the relay: certificates per SNI hostname, from files, a local CA or ACME.

``listener`` accepts TCP itself and peeks at each ClientHello (``clienthello``,
a pure parser) before any TLS byte is answered, so it can *await* a
certificate: the handshake then runs with the context ``resolver`` picked.
``certstore`` holds what can be served (PEM files, reloaded when they change,
plus certificates the relay obtained); ``ondemand`` obtains missing or
expiring ones through an ``Issuer`` (``acme`` for RFC 8555 servers,
``selfsigned`` for a local development CA), one order per hostname at a time,
only for hostnames its policy allows, with backoff after failures.
``storage`` keeps keys and certificates in the data dir (0700 dirs, 0600
keys; ``keys`` makes them); ``http01`` answers ACME HTTP-01 challenges and
redirects plain HTTP; ``options`` checks the CLI's TLS options together;
``setup`` turns a ``RelayConfig`` into all of the above for ``serve``.
"""
