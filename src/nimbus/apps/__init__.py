"""Apps on top of the client: the CLI (people and scripts) and, later, the local web app."""
