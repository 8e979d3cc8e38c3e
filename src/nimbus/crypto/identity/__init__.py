"""Cross-signing identities and trust (spec: Client-Server API, "Cross-signing")."""
