"""On-device AI (smart replies, translation, language detection, summaries, search). Nothing here
opens a network connection. Arrives with its own issue."""
