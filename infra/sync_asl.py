"""Inline the state machine files into template.yaml (Fn::Sub of the file content).

CloudFormation cannot include a local file, and `Fn::Sub` of the definition text is what
both CloudFormation and moto understand, so the template carries a copy of every
infra/statemachines/*.asl.json (compacted: a template body must stay under 51,200 bytes
to deploy without an S3 bucket) under a marker line:

        DefinitionString: !Sub
          # asl: statemachines/uws-job.asl.json
          - |
            {... the file's JSON, on one line ...}
          - RunJobFunctionArn: !GetAtt RunJobFunction.Arn

Edit the .asl.json files, then run `python infra/sync_asl.py`; `--check` exits 1 when
the template is stale (the tests and infra/deploy.sh run it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

INFRA = Path(__file__).resolve().parent
TEMPLATE = INFRA / "template.yaml"
MARKER = re.compile(r"^(?P<indent>\s*)# asl: (?P<file>\S+)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def compact(asl: str) -> str:
    """The definition on one line: the same JSON, a fifth of the template's size limit."""
    return json.dumps(json.loads(asl), separators=(",", ":"))


def render(text: str, root: Path = INFRA) -> str:
    """The template with every marked block replaced by its file's current content."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        m = MARKER.match(line)
        if not m:
            continue
        scalar = lines[i]
        if scalar.strip() != "- |":
            raise ValueError(f"line {i + 1}: expected '- |' after the asl marker")
        out.append(scalar)
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > _indent(scalar)):
            i += 1  # the old copy
        out.append(" " * (_indent(scalar) + 2) + compact((root / m["file"]).read_text()))
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    current = TEMPLATE.read_text()
    fresh = render(current)
    if fresh == current:
        return 0
    if "--check" in argv:
        print(f"{TEMPLATE} is stale: run python infra/sync_asl.py", file=sys.stderr)
        return 1
    TEMPLATE.write_text(fresh)
    print(f"updated {TEMPLATE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
