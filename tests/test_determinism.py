"""Determinism on the CPU: the same seed gives bit-identical scans, vectors and training curves."""

from dataclasses import replace

import pytest
import torch

import ivedu
from ivedu.extraction import build_vectors, clean_prompts, corrupted_prompts, scan_task
from ivedu.toy import TinyConfig, train_tiny_model
from ivedu.prompts import TINY_FORMAT
from ivedu.study import ModelUnderStudy

FMT = TINY_FORMAT  # the tiny model's prompt format

SMALL = TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, steps=5,
                   pretrain_steps=2, batch_size=8, warmup_steps=2)


def scans(model, tok, tasks, seed):
    return {t.name: scan_task(ModelUnderStudy(model, tok, FMT), t, clean_prompts(t, n=8, seed=seed, fmt=FMT),
                              corrupted_prompts(t, n=8, seed=seed, fmt=FMT))
            for t in tasks}


def test_same_seed_gives_identical_scans_and_vectors(tiny):
    model, tok = tiny
    world = ivedu.build_world(0)
    tasks = [world.task("capital"), world.task("sentiment")]
    first, second = scans(model, tok, tasks, seed=3), scans(model, tok, tasks, seed=3)
    for name in first:
        a, b = first[name], second[name]
        assert torch.equal(a.effects, b.effects) and torch.equal(a.mean_activations, b.mean_activations), name
        assert (a.corrupted_prob, a.clean_prob) == (b.corrupted_prob, b.clean_prob), name
    for k in (1, 3):
        va, vb = build_vectors(model, first, k), build_vectors(model, second, k)
        for name in va:
            assert va[name].heads == vb[name].heads and torch.equal(va[name].vector, vb[name].vector), (name, k)
    other = scans(model, tok, tasks[:1], seed=4)  # the seed matters: it draws the prompts
    assert not torch.equal(other["capital"].effects, first["capital"].effects)


def test_same_seed_gives_identical_training_curves():
    _, _, a = train_tiny_model(SMALL, log_every=1)
    _, _, b = train_tiny_model(SMALL, log_every=1)
    _, _, c = train_tiny_model(replace(SMALL, seed=1), log_every=1)
    assert len(a.loss) == SMALL.steps and a.loss == b.loss
    assert a.loss != c.loss
