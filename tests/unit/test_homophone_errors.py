"""scripts/homophone_errors.py on a hand-written hyps file (espeak-ng reads each character)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "homophone_errors.py"


def test_counts_the_substitutions_espeak_reads_alike(tmp_path: Path) -> None:
    rows = [  # 他 / 她 (ta, same tone) and 五 / 午 (wu, same tone) are homophones; 林 for 王 is not
        {"lang": "zh", "ref": "他说外面五度", "hyp": "她说外面午度"},
        {"lang": "zh", "ref": "给王打电话", "hyp": "给林打电话"},
        {"lang": "en", "ref": "call anna", "hyp": "call hannah"},  # not Mandarin: left out
    ]
    hyps = tmp_path / "hyps.jsonl"
    hyps.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = subprocess.run([sys.executable, str(SCRIPT), str(hyps)], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "3 Mandarin substitutions, 2 homophones (66.7%)"
    assert lines[1].startswith("  王 (") and "-> 林 (" in lines[1] and lines[1].endswith(": 1")
    assert len(lines) == 2
