"""QA metrics agree with published values and with their definitions on small hand-checked cases."""

from __future__ import annotations

import pytest

from threedmoe_ros.data.qa_metrics import (
    bleu4, caption_tokens, cider, exact_match, meteor, normalize_answer, qa_metrics, refined_exact_match, rouge_l,
)

# Papineni et al.'s example, as printed in nltk's BLEU documentation: sentence_bleu = 0.5045666840058485.
HYP = "It is a guide to action which ensures that the military always obeys the commands of the party"
REFS = ["It is a guide to action that ensures that the military will forever heed Party commands",
        "It is the guiding principle which guarantees the military forces always being under the command of the Party",
        "It is the practical guide for the army always to heed the directions of the party"]


def test_bleu4_matches_the_published_example():
    assert bleu4([HYP], [REFS]) == pytest.approx(0.5045666840058485, abs=1e-8)


def test_rouge_l_matches_lins_example():
    # Lin (2004) §3: for reference "police killed the gunman", "police kill the gunman" has LCS 3 and
    # "the gunman kill police" LCS 2, so ROUGE-L = 3/4 and 1/2 (P = R, so F = R for any β).
    assert rouge_l(["police kill the gunman"], [["police killed the gunman"]]) == pytest.approx(0.75)
    assert rouge_l(["the gunman kill police"], [["police killed the gunman"]]) == pytest.approx(0.5)


def test_cider_is_ten_for_perfect_captions_and_zero_for_disjoint():
    refs = [["a red block on a table"], ["green bowl left of robot"], ["three cups stacked high"]]
    assert cider([r[0] for r in refs], refs) == pytest.approx(10.0)
    assert cider(["zebra", "yak", "quokka"], refs) == pytest.approx(0.0)


def test_meteor_from_its_definition():
    # Fmean = P·R / (α·P + (1−α)·R), α = 0.9; penalty = γ·(chunks/matches)^β, γ = 0.5, β = 3.
    # All 5 words match in 2 chunks ([on mat] [a cat sat]): 1 · (1 − 0.5·(2/5)³) = 0.968.
    score, _ = meteor(["on mat a cat sat"], [["a cat sat on mat"]])
    assert score == pytest.approx(1 - 0.5 * (2 / 5) ** 3)
    # Stems match: the=the, dog~dogs, runs~running: P = R = 3/4, 2 chunks → 0.75·(1 − 0.5·(2/3)³).
    score, _ = meteor(["the dog runs fast"], [["the dogs are running"]])
    assert score == pytest.approx(0.75 * (1 - 0.5 * (2 / 3) ** 3))


def test_exact_match_and_refined():
    assert normalize_answer("The 2 Chairs.") == "two chairs"
    assert exact_match("Two chairs", ["2 chairs", "two"])
    assert not exact_match("black", ["black chair"])
    assert refined_exact_match("black", ["black chair"])  # contained in a reference
    assert refined_exact_match("it is the black chair", ["black chair"])  # contains one
    assert not refined_exact_match("white", ["black chair"])
    assert not refined_exact_match("", ["black chair"])


def test_qa_metrics_reports_every_column():
    out = qa_metrics(["a red block", "two"], [["the red block"], ["2", "two cups"]])
    assert out["EM@1"] == 100 and out["EM-R"] == 100
    assert set(out) >= {"BLEU-4", "ROUGE-L", "METEOR", "CIDEr", "meteor_synonyms"}
    with pytest.raises(ValueError, match="reference"):
        qa_metrics(["x"], [[]])
    assert caption_tokens("It's a Box!") == ["it's", "a", "box"]
