"""Target verdicts: judged only against a reference model that transcribes."""

import math

from seed_asr.demo.targets import verdict


def test_verdicts_and_the_assessable_limit():
    assert verdict(True, 0.10) == "met"
    assert verdict(False, 0.49) == "NOT met"
    assert verdict(True, 0.50).startswith("not assessed: the reference model's error rate is 50.0%")
    assert verdict(False, 1.05).startswith("not assessed")
    assert verdict(True, math.nan).startswith("not assessed")
