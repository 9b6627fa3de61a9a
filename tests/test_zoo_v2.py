"""zoo-v2: its size and splits, the families it adds, tiny builds of each family in the env, and zoo-v1 untouched."""

import dataclasses

import pytest
import torch

import agents
from prune_env import PruneRNNEnv
from prune_env.tasks import zoo as Z
from prune_env.tasks.models import ZooLM, ZooSequenceNet

V2 = Z.ZOO_V2


def test_sizes_and_splits():
    counts = {split: len(Z.zoo_names(split, version="v2")) for split in Z.SPLITS}
    assert counts["train"] >= 48 and counts["validation"] >= 16 and counts["test"] >= 8, counts
    assert Z.zoo_names(version="v2") == list(V2) and all(n.startswith("zoo-v2/") for n in V2)
    assert not set(V2) & set(Z.ZOO)
    # no (data, architecture) pair is shared between splits
    splits_of: dict = {}
    for s in V2.values():
        splits_of.setdefault(s.pair, set()).add(s.split)
    assert all(len(v) == 1 for v in splits_of.values())


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_every_new_family_in_every_split(split):
    specs = [s for s in V2.values() if s.split == split]
    assert any(s.in_proj for s in specs) and any(s.proj_size for s in specs) and any(s.tied for s in specs)
    assert any(s.head == "attn" for s in specs) and any(s.layers >= 3 for s in specs)
    assert any(s.kind == "regress" for s in specs) and any(s.kind == "word-lm" for s in specs)
    assert any(s.kind == "char-lm" for s in specs) and any(s.kind == "classify" for s in specs)
    if split == "train":
        assert max(s.layers for s in specs) == 4 and any(s.max_vocab and s.max_vocab >= 10000 for s in specs)


def test_names_carry_the_new_options():
    assert "zoo-v2/lstm-char-xmlrpc-1x192-proj64" in V2 and "zoo-v2/lstm-char-lib2to3-1x128-tied" in V2
    assert "zoo-v2/lstm-digits-1x64-attn" in V2 and "zoo-v2/gru-digits-1x96-in32" in V2
    assert Z.lookup("zoo-v2/gru-digits-1x96-in32").in_proj == 32 and Z.lookup("zoo-v2/nope") is None


def test_v1_keys_and_metadata_fields_unchanged():
    for name, spec in Z.ZOO.items():
        assert spec.version == "v1" and name.startswith("zoo-v1/")
        assert set(Z.spec_dict(spec)) == set(Z.V1_FIELDS)
        assert "in_proj" not in Z.defaults(spec) and "proj_size" not in Z.defaults(spec)


def test_models_default_options_build_the_v1_modules_bit_for_bit():
    torch.manual_seed(0)
    a = ZooSequenceNet(3, 8, 2, 4, cell="gru", head="mean")
    torch.manual_seed(0)
    b = ZooSequenceNet(3, 8, 2, 4, cell="gru", head="mean", in_proj=0, proj_size=0)
    assert [n for n, _ in a.named_parameters()] == ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                                                    "rnn.bias_hh_l0", "rnn.weight_ih_l1", "rnn.weight_hh_l1",
                                                    "rnn.bias_ih_l1", "rnn.bias_hh_l1", "head.weight", "head.bias"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_model_options():
    lm = ZooLM(20, 6, 10, 1, proj_size=6, tied=True, in_proj=5)
    assert lm.head.weight is lm.embed.weight and lm.rnn.proj_size == 6 and lm.rnn.input_size == 5
    assert lm(torch.randint(0, 20, (2, 7))).shape == (2, 7, 20)
    net = ZooSequenceNet(3, 8, 1, 4, head="attn", bidirectional=True, proj_size=4)
    x = torch.randn(5, 6, 3)
    assert net(x).shape == (5, 4)
    # attention pooling is a convex combination of the steps' outputs
    out, _ = net.rnn(x)
    w = torch.softmax(net.attn(out), dim=1)
    assert torch.allclose(w.sum(1), torch.ones(5, 1)) and torch.allclose(net.head((w * out).sum(1)), net(x))
    with pytest.raises(ValueError, match="proj_size"):
        ZooLM(20, 6, 10, 1, cell="gru", proj_size=4)
    with pytest.raises(ValueError, match="tied"):
        ZooLM(20, 6, 10, 1, tied=True)
    with pytest.raises(ValueError, match="head"):
        ZooSequenceNet(3, 8, 1, 4, head="max")


def test_adding_sum_is_regression_of_the_marked_pair():
    gen = torch.Generator().manual_seed(0)
    x, y, out = Z.synthetic("adding-sum", 50, 10, gen, tokens=False)
    assert out == 1 and y.dtype == torch.float32
    marked = (x[..., 0] * 9).round() * x[..., 1]
    torch.testing.assert_close(y, marked.sum(1) / 18)


TINY = {"zoo-v2/gru-digits-1x96-in32": {"hidden": 8, "in_proj": 4, "steps": 3, "loss_samples": 32},
        "zoo-v2/lstm-digits-1x64-attn": {"hidden": 8, "steps": 3, "loss_samples": 32},
        "zoo-v2/lstm-sines-2x96-proj32": {"hidden": 8, "proj_size": 3, "steps": 3, "n_train": 64, "n_val": 32,
                                           "n_test": 32, "loss_samples": 32},
        "zoo-v2/lstm-char-lib2to3-1x128-tied": {"hidden": 8, "emb": 8, "steps": 3, "max_tokens": 4000,
                                                "eval_tokens": 256, "test_tokens": 256, "loss_tokens": 256}}


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_build_prunes_to_the_exact_target(name):
    task = Z.make_zoo_task(name, progress=False, **TINY[name])
    assert task.metadata["zoo_version"] == "v2" and task.metadata["spec"] == Z.spec_dict(V2[name])
    env = PruneRNNEnv(task, target_sparsity=0.7)
    res = agents.search("lamp", env, max_evals=1)
    assert env.counts_for(res.allocation).sum() == round(0.7 * env.numels.sum())
    names = [layer.name for layer in env.layers]
    if V2[name].tied:
        assert "head.weight" not in names and "embed.weight" in names  # one tensor, pruned once
    if V2[name].in_proj:
        assert "in_proj.weight" in names
    if V2[name].proj_size:
        assert any(n.startswith("rnn.weight_hr") for n in names)
    if V2[name].head == "attn":
        assert "attn.weight" in names
    # a second build reads the cache and gives the same model
    again = Z.make_zoo_task(name, progress=False, **TINY[name])
    assert again.metadata["from_cache"]
    for (k, p), (_, q) in zip(task.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(p, q), k


def test_overrides_are_checked():
    with pytest.raises(ValueError, match="in_proj"):
        Z.make_zoo_task("zoo-v2/gru-digits-1x96-in32", progress=False, in_proj=0)
    with pytest.raises(Exception, match="zoo-v2/gru-digits-1x96-in32"):
        Z.make_zoo_task("zoo-v2/gru-digits-1x96-in33", progress=False)
    spec = dataclasses.replace(V2["zoo-v2/gru-digits-1x96-in32"], split="validation")
    assert Z.spec_name(spec) == "zoo-v2/gru-digits-1x96-in32"
