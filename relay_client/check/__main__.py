"""``python -m relay_client.check URL`` is ``relay-client check URL``."""

from relay_client.check.cli import main

main()
