"""What every verb's output folder holds, shared by the command-line and output-folder tests."""

from __future__ import annotations

import json
from pathlib import Path

from shapeatlas import __version__
from shapeatlas.outputs import PROVENANCE_NAME

#: provenance.json's fields that say what wrote a folder, when and with what.
PROVENANCE_FIELDS = ("verb", "shapeatlas", "command", "date", "python", "torch", "device")


def assert_provenance(folder: Path, verb: str, *, device: str = "cpu") -> dict:
    """FOLDER/provenance.json names the verb, this version, the command line that wrote it (the
    `shapeatlas VERB ...` one), the date, the Python and torch versions and the device."""
    prov = json.loads((Path(folder) / PROVENANCE_NAME).read_text())
    missing = [k for k in PROVENANCE_FIELDS if not prov.get(k)]
    assert not missing, f"{folder}: provenance.json lacks {missing}"
    assert prov["verb"] == verb and prov["shapeatlas"] == __version__
    assert prov["command"].startswith(f"shapeatlas {verb}"), prov["command"]
    assert prov["device"] == device
    return prov
