"""``python -m relay_client`` is ``relay-client``."""

from relay_client.cli import main

main()
