"""Interop tests: nimbus against Element's own crypto (matrix-js-sdk + Rust crypto in Node 22)."""
