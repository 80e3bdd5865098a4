"""The Saccader network and its training steps."""

from __future__ import annotations

import torch

from agents.saccader import Saccader
from glimpse_gym.bagnet import build_bagnet
from train.saccader import location_loss, policy_loss


def test_shapes() -> None:
    net = Saccader(feature_dim=6, num_classes=4, where_channels=8, mixed_channels=12)
    what = torch.randn(3, 6, 7, 5)
    assert net.mixed(what).shape == (3, 12, 35)
    r = net.rollout(what, glimpses=5, sample=True)
    assert r.cells.shape == r.log_probs.shape == r.entropy.shape == (3, 5)
    assert r.location_logits.shape == (3, 5, 35)
    assert net.classify(what, r.cells).shape == (3, 5, 4)
    assert net.predict(what, r.cells).shape == (3,)
    assert (r.log_probs <= 0).all()


def test_the_cell_never_picks_a_visited_cell() -> None:
    torch.manual_seed(0)
    net = Saccader(feature_dim=4, num_classes=3, where_channels=8, mixed_channels=8)
    for _ in range(20):  # 20 x 256 random states, with mixed features of large scale
        what = torch.randn(256, 4, 6, 6) * 50
        state = (torch.rand(256, 36) < torch.rand(256, 1)).float()
        state[torch.arange(256), torch.randint(0, 36, (256,))] = 0  # one cell left at least
        mixed = net.mixed(what)
        logits = net.location_logits(mixed, state)
        assert state.gather(1, logits.argmax(dim=1, keepdim=True)).sum() == 0
        sampled = torch.multinomial(logits.softmax(dim=1), 1)
        assert state.gather(1, sampled).sum() == 0
    # whole rollouts, sampled: T distinct cells, starting from a given state
    what = torch.randn(512, 4, 4, 4)
    start = torch.zeros(512, 16)
    start[:, :6] = 1
    r = net.rollout(what, glimpses=10, sample=True, state=start)
    assert (r.cells >= 6).all()
    assert (r.cells.sort(dim=1).values.diff(dim=1) > 0).all()


def test_location_step_sends_no_gradient_to_bagnet_or_classifier() -> None:
    bagnet = build_bagnet("bagnet-tiny", num_classes=10, in_channels=1)
    images = torch.rand(8, 1, 32, 32)
    out = bagnet(images)  # features and logits with a graph back to BagNet
    net = Saccader(out.features.shape[1], 10, where_channels=8, mixed_channels=8)
    loss = location_loss(net, out.features, out.logits, glimpses=12)
    loss.backward()
    assert all(p.grad is None for p in bagnet.parameters())
    assert all(p.grad is None for p in net.classifier.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.policy_parameters())


def _key_cell_grids(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """5x5 grids, D = 3: one random 'key' cell per image is marked (channel 0) and holds the
    class sign (channel 1); every other cell holds noise in channels 1-2. With one glimpse,
    only a policy that finds the key cell can beat chance."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    what = torch.zeros(n, 3, 25)
    what[:, 1:] = torch.randn(n, 2, 25, generator=generator)
    key = torch.randint(0, 25, (n,), generator=generator)
    rows = torch.arange(n)
    what[rows, 0, key] = 1.0
    what[rows, 1, key] = labels.float() * 4 - 2
    return what.view(n, 3, 5, 5), labels


def test_policy_step_learns_to_find_the_revealing_cell() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = Saccader(feature_dim=3, num_classes=2, where_channels=16, mixed_channels=16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    test_what, test_labels = _key_cell_grids(2000, g)
    with torch.no_grad():
        net.eval()
        before = (net.predict(test_what, net.rollout(test_what, 1, sample=False).cells)
                  == test_labels).float().mean().item()
        net.train()
    for _ in range(300):
        what, labels = _key_cell_grids(256, g)
        loss, _ = policy_loss(net, what, labels, glimpses=1, l2=8e-5, classification_weight=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        cells = net.rollout(test_what, 1, sample=False).cells
        accuracy = (net.predict(test_what, cells) == test_labels).float().mean().item()
    assert before < 0.7  # chance before training
    assert accuracy >= 0.9, accuracy


def test_checkpoint_loader_names_what_is_wrong(tmp_path) -> None:
    import pytest

    from agents.reinforce import load_reinforce
    from agents.saccader import load_saccader
    from glimpse_gym.errors import CheckpointError
    with pytest.raises(CheckpointError, match="no Saccader checkpoint"):
        load_saccader(tmp_path / "none.pt")
    torch.save({"format": "glimpse-gym-saccader/1"}, tmp_path / "s.pt")
    with pytest.raises(CheckpointError, match="not a REINFORCE checkpoint.*saccader"):
        load_reinforce(tmp_path / "s.pt")
