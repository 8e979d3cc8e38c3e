"""The `nimbus` command line."""
