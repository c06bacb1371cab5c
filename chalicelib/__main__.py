"""Command line: python -m chalicelib <synth|ingest|compact|serve|demo|bench> ...

The commands live in chalicelib.devtools.cli (the Lambda image does not carry them)."""

from chalicelib.devtools.cli import main

if __name__ == "__main__":
    main()
