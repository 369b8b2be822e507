"""3D QA and captioning metrics, as the 3D-MoE / LEO tables report them: EM@1, refined EM, BLEU-4,
ROUGE-L, METEOR, CIDEr.

- BLEU-4, ROUGE-L (β=1.2) and CIDEr-D come from pycocoevalcap, the COCO caption evaluation code the
  papers use; those scorers are pure Python. Its PTB tokenizer needs Java, so text is normalised
  here instead: lower case, punctuation dropped, split on white space (what the PTB step amounts to
  for plain sentences).
- METEOR: pycocoevalcap's METEOR 1.5 needs Java and its paraphrase tables, so we use nltk's
  `meteor_score` (exact, Porter-stem and WordNet-synonym matching). WordNet data cannot be downloaded
  at run time: when the `wordnet` corpus is not installed, the synonym stage is skipped and METEOR
  counts exact and stem matches only. That can only lower the score (fewer matches), so it is a
  lower bound of nltk's METEOR; `qa_metrics` reports which variant ran ("meteor_synonyms").
- EM@1 and refined EM follow LEO's ScanQA / SQA3D evaluation: answers are normalised (lower case,
  punctuation and articles dropped, small numbers spelt out); EM needs the normalised prediction to
  equal a reference; refined EM also accepts a prediction contained in a reference or containing
  one, compared with spaces removed ("black" for "black chair", "2 chairs" for "2").

Scores are returned ×100, as the papers print them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
_ARTICLES = re.compile(r"\b(a|an|the)\b\s*")


def normalize_answer(text: str) -> str:
    """Canonical form of a short answer for EM: 'The 2 Chairs.' → 'two chairs'."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^a-z0-9,'\s\-:]+", " ", text)  # keep word-internal ' - : and list commas
    text = re.sub(r"\b(\d+)\b", lambda m: _NUMBERS[int(m.group(1))] if int(m.group(1)) < len(_NUMBERS) else m.group(1), text)
    text = _ARTICLES.sub("", text)
    return re.sub(r"\s+", " ", text).strip(" ,")


def exact_match(prediction: str, references: Sequence[str]) -> bool:
    """EM@1: the normalised prediction equals a normalised reference."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(r) for r in references)


def refined_exact_match(prediction: str, references: Sequence[str]) -> bool:
    """Refined EM: EM, or one of prediction / reference contains the other (spaces removed)."""
    pred = "".join(normalize_answer(prediction).split())
    for ref in references:
        ref = "".join(normalize_answer(ref).split())
        if pred == ref or (pred and ref and (pred in ref or ref in pred)):
            return True
    return False


def caption_tokens(text: str) -> list[str]:
    """Lower-cased words without punctuation, the form the caption metrics compare."""
    return re.sub(r"[^a-z0-9'\s]+", " ", text.lower().replace("’", "'")).split()


def _coco_inputs(predictions: Sequence[str], references: Sequence[Sequence[str]]):
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if any(len(r) == 0 for r in references):
        raise ValueError("every prediction needs at least one reference")
    res = {i: [" ".join(caption_tokens(p))] for i, p in enumerate(predictions)}
    gts = {i: [" ".join(caption_tokens(r)) for r in refs] for i, refs in enumerate(references)}
    return gts, res


def bleu4(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (pycocoevalcap: closest reference length for the brevity penalty), in [0, 1]."""
    from pycocoevalcap.bleu.bleu import Bleu

    score, _ = Bleu(4).compute_score(*_coco_inputs(predictions, references), verbose=0)
    return float(score[3])


def rouge_l(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean sentence ROUGE-L F-measure with β = 1.2 (pycocoevalcap), in [0, 1]."""
    from pycocoevalcap.rouge.rouge import Rouge

    score, _ = Rouge().compute_score(*_coco_inputs(predictions, references))
    return float(score)


def cider(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """CIDEr-D (pycocoevalcap; document frequencies from these references; 10 for a perfect match)."""
    from pycocoevalcap.cider.cider import Cider

    score, _ = Cider().compute_score(*_coco_inputs(predictions, references))
    return float(score)


class _NoSynonyms:
    """Stands in for nltk's WordNet reader when its data is not installed: no synonyms."""

    def synsets(self, *args, **kwargs) -> list:
        return []


def _wordnet():
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet, True
    except LookupError:
        return _NoSynonyms(), False


def meteor(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, bool]:
    """Mean sentence METEOR (nltk: α=0.9, β=3, γ=0.5) and whether WordNet synonyms were used."""
    from nltk.translate.meteor_score import meteor_score

    _coco_inputs(predictions, references)  # same validation
    wordnet, synonyms = _wordnet()
    scores = [meteor_score([caption_tokens(r) for r in refs], caption_tokens(p), wordnet=wordnet)
              for p, refs in zip(predictions, references)]
    return sum(scores) / len(scores), synonyms


def qa_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """All metrics over a set: EM@1, EM-R (refined), BLEU-4, ROUGE-L, METEOR, CIDEr, each ×100."""
    n = len(predictions)
    if n == 0:
        raise ValueError("qa_metrics needs at least one prediction")
    met, synonyms = meteor(predictions, references)
    return {
        "EM@1": 100 * sum(exact_match(p, r) for p, r in zip(predictions, references)) / n,
        "EM-R": 100 * sum(refined_exact_match(p, r) for p, r in zip(predictions, references)) / n,
        "BLEU-4": 100 * bleu4(predictions, references),
        "ROUGE-L": 100 * rouge_l(predictions, references),
        "METEOR": 100 * met,
        "CIDEr": 100 * cider(predictions, references),
        "meteor_synonyms": float(synonyms),
        "count": float(n),
    }
