"""What every benchmark does with its figures: print them and write them to a JSON file."""
from __future__ import annotations

import json
from pathlib import Path


def write_result(result: dict, path: Path) -> None:
    """``result`` as indented JSON, to ``path`` (its folder created) and to standard output."""
    text = json.dumps(result, indent=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(text)
