"""``benchmarks/tune_map.py`` refuses a malformed knob on its command line, before any
worker starts."""

from pathlib import Path

import pytest

from benchmarks.tune_map import _knob_value, main, parse_variant
from server.steering import fit

PRIOR = "fit.MAP_LENGTHSCALE_PRIOR"


def test_a_lengthscale_prior_knob_is_median_slash_log_sd() -> None:
    name, acq, knobs = parse_variant(f"narrow:misfit_variance:{PRIOR}=0.5/1.0,MISFIT_SHARE=0.8")
    assert (name, acq, knobs) == ("narrow", "misfit_variance",
                                  {PRIOR: "0.5/1.0", "MISFIT_SHARE": 0.8})
    assert _knob_value(PRIOR, fit.MAP_LENGTHSCALE_PRIOR, knobs[PRIOR]) \
        == fit.LengthscalePrior(0.5, 1.0)


@pytest.mark.parametrize("value", ["0.5", "a/b", "0.5/", "0.5/1/2", "0/1", "0.5/-1",
                                   "nan/1"])
def test_a_malformed_lengthscale_prior_stops_the_command_line(
        value: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # small enough to run in seconds were it not refused
    with pytest.raises(SystemExit) as info:
        main(["--variants", f"narrow:misfit_variance:{PRIOR}={value}", "--dims", "2",
              "--maps-per-dim", "1", "--seeds", "0", "--n-max", "10", "--out", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --variants: {PRIOR}=" in err and "expected median/log-sd" in err


@pytest.mark.parametrize("variant, says", [
    ("narrow:misfit_variance:fit.NO_SUCH_KNOB=1", "unknown knob fit.NO_SUCH_KNOB"),
    ("narrow:misfit_variance:MISFIT_SHARE", "is not KNOB=value"),
    ("narrow", "expected name:acquisition"),
])
def test_other_malformed_variants_stop_the_command_line(
        variant: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--variants", variant, "--n-max", "10"])
    assert info.value.code == 2 and says in capsys.readouterr().err
