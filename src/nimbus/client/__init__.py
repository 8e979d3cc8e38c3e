"""The I/O layer: the HTTP transport, and (later) the sync loop and outbox."""
