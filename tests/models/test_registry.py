import argparse
from dataclasses import asdict

import numpy as np
import pytest
import torch

from models import registry
from models.checkpoint import load_checkpoint, save_checkpoint
from models.cli import register
from models.superres.net import SuperResConfig, SuperResNet
from models.synth import GENERATOR_VERSION, TAGS
from models.tagger.net import TaggerConfig, TaggerNet

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _save(tmp_path, name, net, cfg):
    return save_checkpoint(tmp_path / f"{name}.pt", {
        "name": name, "config": asdict(cfg), "state_dict": net.state_dict(), "seed": 5,
        "generator": {"version": GENERATOR_VERSION, "config": {}}, "metrics": {},
    })


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    sr_cfg = SuperResConfig(channels=8, n_blocks=1)
    tg_cfg = TaggerConfig(TAGS, size=32, widths=(4, 8))
    sr, tg = SuperResNet(sr_cfg).eval(), TaggerNet(tg_cfg).eval()
    tg.log_temperature.fill_(0.3)  # the calibration buffer must survive the round trip
    return {"superres": (sr, _save(tmp_path, "superres", sr, sr_cfg)),
            "tagger": (tg, _save(tmp_path, "tagger", tg, tg_cfg))}


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoint_round_trip_rebuilds_the_same_net(tiny, device):
    sr, path = tiny["superres"]
    m = registry.load(path, device=device)
    x = torch.rand(1, 1, 9, 11) * 30
    torch.testing.assert_close(m.net(x.to(device), 4).cpu(), sr(x, 4))
    assert m.info.parameters["factors"] == [2, 4] and m.info.seed == 5
    assert m.predict(np.ones((9, 11)), factor=2).shape == (18, 22)

    tg, path = tiny["tagger"]
    m = registry.load(path, device=device)
    img = torch.rand(40, 50) * 100
    torch.testing.assert_close(m.net.tag_images([img]).cpu(), tg.tag_images([img]))
    assert m.info.tags == TAGS
    assert set(m.predict(img.numpy())) == set(TAGS)


def test_checkpoint_needs_its_identity(tmp_path):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "x.pt", {"name": "tagger", "state_dict": {}})
    assert load_checkpoint(_save(tmp_path, "superres", SuperResNet(SuperResConfig()),
                                 SuperResConfig()))["seed"] == 5


def test_unknown_name_is_refused(tmp_path):
    cfg = SuperResConfig()
    path = save_checkpoint(tmp_path / "y.pt", {
        "name": "nope", "config": asdict(cfg), "state_dict": {}, "seed": 0, "generator": {}})
    with pytest.raises(KeyError):
        registry.load(path)


def _cli(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_eval_prints_tables_and_writes_a_figure(tiny, tmp_path, capsys):
    _, path = tiny["superres"]
    assert _cli(["models", "eval", "superres", "--checkpoint", str(path), "--n", "3",
                 "--figure", str(tmp_path / "sr.png")]) == 0
    out = capsys.readouterr().out
    assert "bicubic" in out and "PSNR" in out and (tmp_path / "sr.png").stat().st_size > 0
    _, path = tiny["tagger"]
    assert _cli(["models", "eval", "tagger", "--checkpoint", str(path), "--n", "12",
                 "--no-baseline", "--figure", str(tmp_path / "tg.png")]) == 0
    assert "mAP" in capsys.readouterr().out and (tmp_path / "tg.png").stat().st_size > 0


def test_cli_refuses_a_checkpoint_of_the_other_net(tiny, capsys):
    _, path = tiny["superres"]
    assert _cli(["models", "eval", "tagger", "--checkpoint", str(path)]) == 2
