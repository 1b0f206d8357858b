"""aecli/overrides.py: overrides read by Hydra's own parser, mistakes said with what to write instead."""

from __future__ import annotations

import pytest

from aecli.errors import AecliError
from aecli.overrides import choices, parse, value


def test_value_reads_the_last_override_as_hydra_parses_it():
    args = ["-m", "resume=a", "+seed=3", "resume='b c'", "hydra.run.dir=outputs/${now:%H}", "--cfg", "job"]
    assert value(args, "resume") == "b c" and value(args, "seed") == "3" and value(args, "epochs") is None
    assert value(args, "hydra.run.dir") == "outputs/${now:%H}" and value(["resume=null"], "resume") == "null"
    assert value(["resume.x=1", "resumed=2"], "resume") is None


def test_choices_of_a_group_override():
    a, b, c = parse(["model=cae", "-m", "model=cae,dae", "logger=[csv,mlflow]"])
    assert (choices(a), choices(b), choices(c)) == (["cae"], ["cae", "dae"], ["csv", "mlflow"])


@pytest.mark.parametrize("args,needle", [
    (["lambda"], "cannot read the overrides: Error parsing override 'lambda'"),
    (["model=vae,", "lambda=1"], "write model=vae lambda=1"),
    (["data.path=~/x.npz"], "~ is not expanded inside an override"),
])
def test_a_line_that_does_not_parse_is_one_line(args, needle):
    with pytest.raises(AecliError) as e:
        parse(args)
    assert needle in str(e.value) and "\n" not in str(e.value)
