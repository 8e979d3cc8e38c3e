"""Client-Server API requests as values and response parsing. No I/O: `nimbus.client` sends them."""
