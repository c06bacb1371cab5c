"""SPHEREx archive services: protocol logic, the catalogue engine and the CLI."""
