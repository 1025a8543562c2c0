"""The whole network: Eq. 20-21 by hand, shapes for every K, determinism, and that it learns."""

import pytest
import torch

from bianet_lib.engine.scoring import BIANetScorer
from bianet_lib.engine.trainer import Trainer
from bianet_lib.model.network import BIANet, MatchingClassifier
from tests.helpers import random_split, tiny_config


def test_matching_classifier_tied_hand_value():
    head = MatchingClassifier(dim=2, mode="tied", k=2, dropout=0.0)
    with torch.no_grad():
        head.slot.weight.copy_(torch.tensor([[1.0, -2.0]]))
        head.slot.bias.fill_(0.5)
    q = torch.tensor([[0.0, 1.0]])
    c = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    # Eq. 20 features: exp(h0 - h1) = [1, 1], exp(h0 - h2) = [e^-1, e^1]
    e = torch.e
    expected = torch.tensor([[1 - 2 + 0.5, 1 / e - 2 * e + 0.5]])
    assert torch.allclose(head(q, c), expected)
    assert torch.allclose(head.verify(q, c[:, 1]), expected[:, 1])


def test_paper_head_is_a_linear_map_of_the_concatenation():
    head = MatchingClassifier(dim=2, mode="paper", k=2, dropout=0.0)
    q, c = torch.randn(3, 2), torch.randn(3, 2, 2)
    feats = torch.exp(q[:, None] - c).flatten(1)
    assert torch.allclose(head(q, c), head.mix(feats))
    with pytest.raises(ValueError, match="K=2"):
        head(q, torch.randn(3, 3, 2))


@pytest.mark.parametrize("pia,nia", [(True, True), (False, False), (True, False), (False, True)])
def test_every_k_and_verification_have_the_right_shapes(pia, nia):
    torch.manual_seed(0)
    model = BIANet(tiny_config(use_pia=pia, use_nia=nia)).eval()
    ev = model.embed_voices(torch.randn(10, 4000))
    ef = model.embed_faces(torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8))
    assert ev.stacked().shape == (10, 2 if nia else 1, 16)
    for k in range(2, 11):
        cands = ef.stacked()[torch.randint(0, 10, (7, k))]
        z, z_pos, z_neg = model.match_logits(ev.stacked()[:7], cands, 0.5)
        assert z.shape == (7, k)
        assert (z_neg is not None) == nia
        if nia:
            assert torch.allclose(z, z_pos - 0.5 * z_neg)
    assert model.verify_scores(ev.stacked(), ef.stacked(), 1.0).shape == (10,)


def test_eval_mode_is_deterministic():
    torch.manual_seed(0)
    model = BIANet(tiny_config(nia_drop_p=0.5)).eval()
    v = torch.randn(6, 4000)
    assert torch.equal(model.embed_voices(v).stacked(), model.embed_voices(v).stacked())
    model.train()
    assert not torch.equal(model.embed_voices(v).stacked(), model.embed_voices(v).stacked())


def test_encoders_must_agree_in_width():
    with pytest.raises(ValueError, match="same width"):
        BIANet(tiny_config(face_widths=(8, 8, 16, 32)))


def test_full_model_overfits_a_tiny_fixed_set(tmp_path):
    """PIA + NIA + curriculum reach >= 95% 1:2 training accuracy: the whole graph learns."""
    torch.manual_seed(0)
    split = random_split(8, per_id=1)
    cfg = tiny_config(epochs=1, w_adv=0.1)
    trainer = Trainer(cfg, split, split, tmp_path, progress=False)
    ids = torch.arange(8)
    n_steps = 150
    for _ in range(n_steps):
        trainer.train_step(split.voices, split.faces, ids)
    scorer = BIANetScorer(trainer.model)
    ev, ef = scorer.embed(split, "voice"), scorer.embed(split, "face")
    pairs = torch.tensor([(i, j) for i in range(8) for j in range(8) if i != j])
    correct = 0
    for _direction, emb_q, emb_c in (("vf", ev, ef), ("fv", ef, ev)):
        cands = torch.stack([pairs[:, 0], pairs[:, 1]], dim=1)  # true match in column 0
        logits = scorer.match_logits(emb_q[pairs[:, 0]], emb_c[cands])
        correct += int((logits[:, 0] > logits[:, 1]).sum())
    accuracy = correct / (2 * len(pairs))
    assert trainer.curriculum_w() > 0  # the negative branch was in play
    assert accuracy >= 0.95, accuracy


def test_both_scoring_routes_embed_each_split_once():
    from bianet_lib.engine.protocols import evaluate_model

    torch.manual_seed(0)
    model = BIANet(tiny_config()).eval()
    test, val = random_split(4, per_id=2, name="test"), random_split(4, per_id=2, seed=1, name="val")
    calls = []
    original = model.embed_voices
    model.embed_voices = lambda waves: calls.append(len(waves)) or original(waves)
    out = evaluate_model(model, test, val)
    assert set(out) >= {"classifier", "cosine"}
    assert sum(calls) == len(test.voices) + len(val.voices)  # not twice that
