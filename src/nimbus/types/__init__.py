"""Pure data: identifiers, event shapes and key shapes. No I/O, no imports from other nimbus layers."""
