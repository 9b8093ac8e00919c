"""Print template.yaml with other parameter defaults, so the linters (which take no parameter values) can check a
deployment mode other than the default: `python infra/template_variant.py ApiAuth=api-key > variant.yaml`.

Only the `Default:` line of each named parameter changes; an unknown parameter or one without a default is an
error (a silent no-op would lint the default twice)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"


def with_defaults(text: str, overrides: dict[str, str]) -> str:
    for name, value in overrides.items():
        pattern = re.compile(rf"^(  {re.escape(name)}:\n(?:    .*\n)*?    Default: ).*$", flags=re.M)
        text, count = pattern.subn(lambda m, v=value: m.group(1) + f'"{v}"', text, count=1)
        if count != 1:
            raise SystemExit(f"template.yaml has no parameter {name} with a Default line")
    return text


def main(argv: list[str]) -> None:
    pairs = [a.split("=", 1) for a in argv]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise SystemExit("usage: python infra/template_variant.py Name=value [Name=value ...]")
    sys.stdout.write(with_defaults(TEMPLATE.read_text(), dict(pairs)))


if __name__ == "__main__":
    main(sys.argv[1:])
