"""The end-to-end encryption state machine (sans-I/O, on vodozemac). Arrives with the E2EE issue."""
