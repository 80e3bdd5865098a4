"""``glimpse results``: every step it plans is a valid ``glimpse`` command line, and steps
whose output exists are skipped."""

from __future__ import annotations

import pytest

from glimpse_gym.errors import UsageError
from glimpse_gym.tasks import TASKS
from train.cli import build_parser
from train.results import AGENTS, ResultsConfig, plan, run_results


@pytest.mark.parametrize("bagnet", ["train", "shipped"])
@pytest.mark.parametrize("task", ["cluttered-mnist", "cluttered-mnist-100", "cluttered-fashion"])
def test_every_planned_step_parses(task, bagnet, tmp_path) -> None:
    steps = plan(ResultsConfig(task=task, bagnet=bagnet, out=str(tmp_path)))
    parser = build_parser()
    names = [name for name, _, _ in steps]
    assert names[-1] == "combine" and names.count("evaluate-s0") == 1
    assert sum(n.startswith("saccader-") for n in names) == 3
    assert any(n.startswith("bagnet-") for n in names) == (bagnet == "train")
    for name, cmd, _ in steps:
        args = parser.parse_args(cmd[3:])  # after "python -m train.cli"
        assert args.command
        # every agent is trained, and the occlusion test run, with the task's T
        if name.split("-s")[0] in AGENTS:
            assert args.glimpses == TASKS[task].glimpses
        if name.startswith("saccader-"):  # 1 + 3 epochs on 100x100, else 3 + 10
            epochs = (1, 3) if task == "cluttered-mnist-100" else (3, 10)
            assert (args.location_epochs, args.policy_epochs) == epochs
        if name.startswith("evaluate-"):
            assert args.occlusion_glimpses == TASKS[task].glimpses
    assert TASKS["cluttered-mnist-100"].glimpses == 8  # RAM's larger task: 8 glimpses


def test_bagnet_per_seed_trains_one_bagnet_per_seed(tmp_path) -> None:
    steps = plan(ResultsConfig(bagnet_per_seed=True, out=str(tmp_path)))
    bagnets = [name for name, _, _ in steps if name.startswith("bagnet-")]
    assert bagnets == ["bagnet-s0", "bagnet-s1", "bagnet-s2"]
    saccader_1 = next(cmd for name, cmd, _ in steps if name == "saccader-s1")
    assert str(tmp_path / "banks-s1") in saccader_1


def test_bad_task_agent_or_bagnet_is_a_usage_error() -> None:
    for cfg in (ResultsConfig(task="mnist-200"), ResultsConfig(agents=["dqn"]),
                ResultsConfig(bagnet="download")):
        with pytest.raises(UsageError):
            plan(cfg)


def test_done_steps_are_skipped_and_the_dry_run_runs_nothing(tmp_path, capsys) -> None:
    cfg = ResultsConfig(agents=["saccader"], seeds=[0], out=str(tmp_path), dry_run=True)
    assert run_results(cfg) == {}
    assert not (tmp_path / "logs").exists()
    for _, _, done in plan(cfg)[:-1]:  # every step but the combination has run
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text("{}")
    cfg.dry_run = False
    with pytest.raises(UsageError, match="step combine failed"):  # its inputs are fakes
        run_results(cfg)
    out = capsys.readouterr().out
    assert out.count("done before, skipped") == len(plan(cfg)) - 1


def test_evaluate_combines_seeds_into_means_intervals_and_differences(tmp_path, capsys) -> None:
    import json

    from train.evaluate import EvaluateConfig, evaluate

    runs = []
    for seed in (0, 1, 2):  # the random policy and the random occlusion change with the seed
        out = tmp_path / f"seed{seed}"
        evaluate(EvaluateConfig(policy=["random", "ordered-logits"], max_glimpses=4,
                                occlusion_glimpses=2, max_images=120, pictures=0, seed=seed,
                                out=str(out), progress=False))
        runs.append(json.loads((out / "results.json").read_text()))
    combined = evaluate(EvaluateConfig(combine=[str(tmp_path / f"seed{s}") for s in (0, 1, 2)],
                                       out=str(tmp_path / "all")))
    random_t2 = combined["policies"]["random"]["error"][2]
    values = [r["policies"]["random"]["error"]["2"] for r in runs]
    assert random_t2["values"] == values and random_t2["n"] == 3
    assert random_t2["ci95"][0] <= random_t2["mean"] <= random_t2["ci95"][1]
    assert min(values) <= random_t2["ci95"][0] and random_t2["ci95"][1] <= max(values)
    ordered = combined["policies"]["ordered-logits"]["error"][2]
    assert ordered["std"] == 0  # one BagNet: ordered logits is the same for every seed
    diff = combined["differences"][2]["ordered-logits - random"]
    assert diff["differs"] == (diff["ci95"][1] < 0 or diff["ci95"][0] > 0)
    for name in ("results.json", "results.csv", "accuracy.png"):
        assert (tmp_path / "all" / name).is_file()
    assert "mean ± std over seeds" in capsys.readouterr().out
    with pytest.raises(UsageError, match="--reference"):
        evaluate(EvaluateConfig(combine=[str(tmp_path / "seed0")], reference="saccader",
                                out=str(tmp_path / "again"), overwrite=True))
    with pytest.raises(UsageError, match="not the results.json"):
        evaluate(EvaluateConfig(combine=[str(tmp_path / "nowhere")], out=str(tmp_path / "x")))
