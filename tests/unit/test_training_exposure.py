import json

import webdataset as wds

from seed_asr.eval import training_exposure
from seed_asr.testing.synthetic import synthetic_record


def write_records(path, records):
    with wds.TarWriter(str(path)) as writer:
        for key, fields in records.items():
            record = {**synthetic_record(key, 1.0), **fields}
            writer.write({"__key__": key, "json": json.dumps(record).encode()})


def test_names_and_scoring_units_of_the_training_records(tmp_path):
    write_records(tmp_path / "a.tar", {
        "u0": {"text": "Call Anneliese at five", "context": {"entities": ["Anneliese"]}},
        "u1": {"text": "call me", "context": {}},
    })  # fmt: skip
    write_records(tmp_path / "b.tar", {
        "u2": {"text": "给王打电话", "lang": "zh", "context": {"entities": ["王"]}},
    })  # fmt: skip
    exposure = training_exposure(str(tmp_path / "*.tar"))
    assert exposure.names == {"Anneliese", "王"}
    # English words normalised as the error rate scores them ("five" -> "5"), Mandarin characters
    assert exposure.unit_counts == {
        ("en", "call"): 2, ("en", "anneliese"): 1, ("en", "at"): 1, ("en", "5"): 1, ("en", "me"): 1,
        ("zh", "给"): 1, ("zh", "王"): 1, ("zh", "打"): 1, ("zh", "电"): 1, ("zh", "话"): 1,
    }  # fmt: skip
    assert training_exposure([str(tmp_path / "a.tar")]).names == {"Anneliese"}
