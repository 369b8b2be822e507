"""Instructions in many phrasings: the training sampler never produces a held-out word or template,
the held-out split does, and every phrasing still names the task's objects."""

from __future__ import annotations

import re

import numpy as np
import pytest

from threedmoe_ros.sim.env import EnvConfig, TabletopEnv
from threedmoe_ros.sim.phrasing import HELDOUT_WORDS, VOCABULARY, Phrasing, phrasing_for
from threedmoe_ros.sim.tasks import HELDOUT_TASKS, TASKS, TRAINING_TASKS

WORD = re.compile(r"[a-z]+")


def skeleton(template: str) -> str:
    """A template's fixed words, slots removed: how a sentence made from it can be recognised."""
    return " ".join(WORD.findall(re.sub(r"\{[a-z0-9]+\}", " ", template)))


def sentences(split: str, task, n: int) -> list[str]:
    out = []
    for seed in range(n):
        phrasing = Phrasing(split, np.random.default_rng(seed))
        family = phrasing.family(task)
        template = family[seed % len(family)]
        words = dict(c="red", z="green", bc="blue", a="a ", blocks="blocks", bowls="bowls", c0="red", c1="gray",
                     c2="blue", s="big", b="top left", r="left of", rc="yellow", p="top right")
        out.append(phrasing.rewrite(template.format(**words)))
    return out


@pytest.mark.parametrize("task", [TASKS[n] for n in TRAINING_TASKS], ids=list(TRAINING_TASKS))
def test_training_sampler_never_produces_heldout_words_or_templates(task):
    train, heldout = Phrasing("train", None).family(task), Phrasing("heldout", None).family(task)
    assert train and heldout and not set(train) & set(heldout)
    for text in sentences("train", task, 300):
        words = set(WORD.findall(text.lower()))
        assert not words & HELDOUT_WORDS, (text, words & HELDOUT_WORDS)
    held = sentences("heldout", task, 100)
    assert sum(bool(set(WORD.findall(t.lower())) & HELDOUT_WORDS) for t in held) >= 90  # nearly every one is new


def test_heldout_tasks_templates_are_never_drawn_by_the_training_sampler():
    """A task held out from training has no training phrasing, and no training task shares one of its
    templates (a sentence with the same words and slots would be the held-out task's, seen in training)."""
    heldout = {t: name for name in HELDOUT_TASKS for t in TASKS[name].templates + TASKS[name].heldout_templates}
    for name in HELDOUT_TASKS:
        with pytest.raises(ValueError, match="held out from training"):
            Phrasing("train", None).family(TASKS[name])
        assert sentences("heldout", TASKS[name], 5)  # evaluation still phrases it
    for name in TRAINING_TASKS:
        for template in Phrasing("train", None).family(TASKS[name]) + TASKS[name].templates:
            assert template not in heldout, (name, template, heldout.get(template))


def test_heldout_templates_never_come_from_the_training_sampler():
    for name in TRAINING_TASKS:
        task = TASKS[name]
        train = {skeleton(t) for t in Phrasing("train", None).family(task)}
        for template in Phrasing("heldout", None).family(task):
            assert skeleton(template) not in train, name
        assert task.templates[-1] not in Phrasing("train", None).family(task)


def test_vocabulary_splits_are_disjoint_and_cover_the_words_they_replace():
    for cls, (words, train, heldout) in VOCABULARY.items():
        assert not set(train) & set(heldout), cls
        assert set(words) <= set(train), cls  # the original words stay in training


def test_one_synonym_per_class_keeps_plurals_and_varies_the_surface():
    seen = set()
    for seed in range(200):
        text = Phrasing("train", np.random.default_rng(seed)).rewrite("put the red blocks in the green zone")
        low = text.lower()
        assert re.search(r"\b(blocks|cubes)\b", low) and re.search(r"\b(zone|square)\b", low), text
        seen.add(text)
    assert len(seen) > 30
    assert any(t[:1].isupper() for t in seen) and any(t.endswith("?") for t in seen) and any("please" in t for t in seen)


def test_episode_instruction_follows_the_phrasing_split_and_seed():
    config = dict(task="put-block-in-zone", observe=False)
    with TabletopEnv(EnvConfig(**config)) as plain, TabletopEnv(EnvConfig(**config, phrasing="heldout")) as held:
        a, b = plain.reset(7)[0]["instruction"], held.reset(7)[0]["instruction"]
        assert a in {t.format(c=plain.scene.objects[1].color, z=plain.scene.objects[0].color)
                     for t in plain.task.templates}
        assert set(WORD.findall(b.lower())) & HELDOUT_WORDS
        colors = {o.color for o in held.scene.objects[:2]}
        assert all(c in b.lower().replace("grey", "gray") for c in colors)  # the words still name the objects
        assert held.reset(7)[0]["instruction"] == b
    with pytest.raises(ValueError, match="plain, train, heldout"):
        phrasing_for("formal", [0])
