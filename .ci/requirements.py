"""The project's requirements less torch, for an environment whose torch is installed apart:
`python .ci/requirements.py EXTRA ...` prints the core dependencies and those extras', one a line."""

import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
wanted = project["dependencies"] + [d for extra in sys.argv[1:] for d in project["optional-dependencies"][extra]]
print("\n".join(d for d in dict.fromkeys(wanted) if not d.replace(" ", "").startswith(("torch=", "torch<", "torch>"))))
