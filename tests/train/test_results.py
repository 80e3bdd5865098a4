"""``glimpse results``: every step it plans is a valid ``glimpse`` command line, and steps
whose output exists are skipped."""

from __future__ import annotations

import pytest

from glimpse_gym.errors import UsageError
from glimpse_gym.tasks import TASKS
from train.cli import build_parser
from train.results import (
    AGENTS,
    ResultsConfig,
    compare_finetuned,
    output_folder,
    plan,
    run_results,
)


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


def test_single_seed_runs_share_the_shipped_banks(tmp_path) -> None:
    # `--seeds 1` and `--seeds 2` run side by side into one folder read the shipped BagNet's
    # banks (seed 0's), not banks of their own; with --bagnet train the first seed's BagNet
    for seed in (1, 2):
        steps = plan(ResultsConfig(bagnet="shipped", seeds=[seed], out=str(tmp_path)))
        banks = [name for name, _, _ in steps if name.startswith("banks-")]
        assert banks == ["banks-s0"]
        saccader = dict((n, c) for n, c, _ in steps)[f"saccader-s{seed}"]
        assert str(tmp_path / "banks-s0") in saccader
    trained = plan(ResultsConfig(seeds=[2], out=str(tmp_path)))
    assert [name for name, _, _ in trained if name.startswith("bagnet-")] == ["bagnet-s2"]


def test_bad_task_agent_or_bagnet_is_a_usage_error() -> None:
    for cfg in (ResultsConfig(task="mnist-200"), ResultsConfig(agents=["dqn"]),
                ResultsConfig(bagnet="download")):
        with pytest.raises(UsageError):
            plan(cfg)


@pytest.mark.parametrize("bagnet", ["train", "shipped"])
def test_finetune_runs_the_papers_step_3_per_seed_on_its_own_banks(bagnet, tmp_path) -> None:
    steps = plan(ResultsConfig(bagnet=bagnet, finetune_epochs=1, out=str(tmp_path)))
    names = [name for name, _, _ in steps]
    assert names[-2:] == ["combine", "combine-finetuned"]
    parser = build_parser()
    for s in range(3):
        # after the seed's own Saccader, which it starts from
        assert names.index(f"saccader-s{s}") < names.index(f"saccader-finetune-s{s}") \
            < names.index(f"evaluate-finetuned-s{s}")
        cmd = dict((n, c) for n, c, _ in steps)[f"saccader-finetune-s{s}"]
        args = parser.parse_args(cmd[3:])
        assert (args.stage, args.finetune_epochs, args.seed) == ("finetune", 1, s)
        assert args.bagnet_checkpoint == ("cluttered-mnist" if bagnet == "shipped" else
                                          str(tmp_path / "bagnet-s0" / "bagnet.pt"))
        done = dict((n, d) for n, _, d in steps)[f"saccader-finetune-s{s}"]
        assert done == tmp_path / f"seed{s}" / "saccader" / "finetuned" / "results.json"
        from train.results import _checkpoint_of
        assert _checkpoint_of(cmd) is None  # it starts again from policy.pt: no --resume
        evaluate = parser.parse_args(dict((n, c) for n, c, _ in steps)
                                     [f"evaluate-finetuned-s{s}"][3:])
        tuned = tmp_path / f"seed{s}" / "saccader" / "finetuned"
        assert evaluate.bank == str(tuned / "banks" / "test")
        assert evaluate.checkpoint == str(tuned / "bagnet.pt")
    assert not any("finetune" in name for name, _, _ in plan(ResultsConfig(out="unused")))


def test_compare_finetuned_gives_the_difference_over_seeds(tmp_path) -> None:
    import json

    def write(table: str, name: str, values: list[float]) -> None:
        folder = tmp_path / table / "combined"
        folder.mkdir(parents=True)
        row = {"error": {"6": {"values": values}, "8": {"values": values}}}
        (folder / "results.json").write_text(json.dumps({"policies": {name: row}}))

    write("eval", "saccader", [0.010, 0.011, 0.009])
    write("eval-finetuned", "saccader-finetuned", [0.008, 0.0085, 0.0075])
    rows = compare_finetuned(tmp_path)["finetuned - fixed bank"]
    assert set(rows) == {"6", "8"}
    assert rows["6"]["mean"] == pytest.approx(-0.002) and rows["6"]["differs"]
    saved = json.loads((tmp_path / "eval-finetuned" / "versus-fixed-bank.json").read_text())
    assert saved["finetuned - fixed bank"]["8"]["mean"] == pytest.approx(-0.002)


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


def test_timings_of_other_runs_into_the_folder_are_kept(tmp_path, monkeypatch) -> None:
    import json

    import train.results

    cfg = ResultsConfig(agents=["reinforce"], seeds=[1], bagnet="shipped", out=str(tmp_path))
    timings = tmp_path / "timings.json"

    def step(cmd, **_):  # each step "runs"; meanwhile another seed's run records its own
        other = json.loads(timings.read_text()) if timings.is_file() else {}
        other[f"other-{len(other)}"] = 1.0
        timings.write_text(json.dumps(other))
        return 0

    monkeypatch.setattr(train.results.subprocess, "call", step)
    (tmp_path / "banks-s0" / "test").mkdir(parents=True)
    (tmp_path / "banks-s0" / "test" / "meta.json").write_text("{}")
    ran = run_results(cfg)
    assert set(ran) == {"reinforce-s1", "evaluate-s1", "combine"}
    recorded = json.loads(timings.read_text())
    assert set(ran) <= set(recorded) and sum(k.startswith("other-") for k in recorded) == 3


def test_an_agent_cut_short_after_a_checkpoint_is_run_again(tmp_path, capsys) -> None:
    # trainers save best/last checkpoints while they run; only results.json says they finished
    cfg = ResultsConfig(agents=["reinforce"], seeds=[0], out=str(tmp_path))
    steps = {name: done for name, _, done in plan(cfg)}
    assert steps["reinforce-s0"].name == "results.json"
    for name, done in steps.items():
        if name != "combine":
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text("{}")
    steps["reinforce-s0"].unlink()
    (steps["reinforce-s0"].parent / "best.pt").write_text("partial")
    (steps["reinforce-s0"].parent / "last.pt").write_text("partial")
    with pytest.raises(UsageError, match="step reinforce-s0 failed"):  # the banks are fakes
        run_results(cfg)
    out = capsys.readouterr().out
    assert "reinforce-s0: done before" not in out
    # it continues from its checkpoint instead of starting again
    assert "reinforce-s0: continuing" in out and "--resume" in out.split("continuing")[1]


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
    for name in ("results.json", "results.csv", "results.md", "accuracy.png"):
        assert (tmp_path / "all" / name).is_file()
    markdown = (tmp_path / "all" / "results.md").read_text().splitlines()
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in markdown
            if line.startswith("| ") and " | " in line}
    assert set(rows) >= {"test error (%) at T =", "random", "ordered-logits"}
    # the spread of the random draws shows; ordered logits reads one BagNet: a bare value
    assert rows["random"][1] == "{:.2f} ± {:.2f}".format(100 * random_t2["mean"],
                                                         100 * random_t2["std"])
    assert "±" not in rows["ordered-logits"][0]
    assert "mean ± std over seeds" in capsys.readouterr().out
    with pytest.raises(UsageError, match="--reference"):
        evaluate(EvaluateConfig(combine=[str(tmp_path / "seed0")], reference="saccader",
                                out=str(tmp_path / "again"), overwrite=True))
    with pytest.raises(UsageError, match="not the results.json"):
        evaluate(EvaluateConfig(combine=[str(tmp_path / "nowhere")], out=str(tmp_path / "x")))


def test_every_trainer_step_names_the_checkpoint_it_continues_from(tmp_path) -> None:
    from train.results import _checkpoint_of

    for name, cmd, _ in plan(ResultsConfig(out=str(tmp_path))):
        checkpoint = _checkpoint_of(cmd)
        kind = name.rsplit("-s", 1)[0]
        expected = {"bagnet": "bagnet.pt", "saccader": "locations.pt", "maskable-ppo":
                    "last.zip", "ppo": "last.zip", "reinforce": "last.pt"}.get(kind)
        assert (checkpoint.name if checkpoint else None) == expected, name


@pytest.mark.parametrize("task", ["cluttered-mnist", "cluttered-mnist-100", "cluttered-fashion"])
def test_the_multiscale_plan_parses_and_resumes(task, tmp_path) -> None:
    from train.results import _checkpoint_of
    from train.results_multiscale import MULTISCALE

    cfg = ResultsConfig(task=task, multiscale=True, root="data", out=str(tmp_path))
    steps = plan(cfg)
    names = [name for name, _, _ in steps]
    assert names[:2] == ["bagnet-s0", "banks-s0"] and names[-1] == "combine"
    assert sum(n.startswith("tnet-") for n in names) == 3
    assert sum(n.startswith("saccader-") for n in names) == 3
    parser = build_parser()
    for name, cmd, _ in steps:
        args = parser.parse_args(cmd[3:])
        if name == "bagnet-s0":
            assert args.scales == MULTISCALE[task][0]
        if name.startswith("tnet-"):
            assert args.locations == MULTISCALE[task][1]
            # TNet and MaskablePPO are compared at the same T
            assert sum(int(k) for k in args.locations.split(",")) == TASKS[task].glimpses
            assert _checkpoint_of(cmd).name == "last.pt"
        if name.startswith("saccader-"):
            assert args.glimpses == TASKS[task].glimpses
            assert _checkpoint_of(cmd).name == "last.pt"
        if name.startswith("evaluate-"):
            assert {p.split("=")[0] for p in args.policy} == {"random", "ordered-logits", "tnet",
                                                            "multiscale-ppo", "saccader"}
        if name.startswith("multiscale-ppo-"):
            assert args.glimpses == TASKS[task].glimpses
            assert args.n_steps % args.glimpses == 0  # rollouts of whole episodes
            assert _checkpoint_of(cmd).name == "last.zip"
    assert plan(ResultsConfig(task=task, multiscale=True))[0][1][-1] == "--overwrite"
    assert str(plan(ResultsConfig(task=task, multiscale=True))[1][1]).count(f"{task}-ms")
    with pytest.raises(UsageError, match="--multiscale"):
        plan(ResultsConfig(task=task, multiscale=True, finetune_epochs=1))


@pytest.mark.parametrize("task", ["cluttered-mnist", "cluttered-mnist-100", "cluttered-fashion"])
def test_the_multiscale_plan_on_the_shipped_bagnets(task, tmp_path) -> None:
    cfg = ResultsConfig(task=task, multiscale=True, bagnet="shipped", out=str(tmp_path))
    if not TASKS[task].multiscale_shipped:
        with pytest.raises(UsageError, match="ships no BagNet across scales"):
            plan(cfg)
        return
    steps = {name: cmd for name, cmd, _ in plan(cfg)}
    assert "bagnet-s0" not in steps  # nothing trained: the package's two BagNets
    args = build_parser().parse_args(steps["banks-s0"][3:])
    assert args.scales == "0.5,1" and args.level_checkpoint == [f"1={task}"]
    assert args.checkpoint.endswith(TASKS[task].multiscale_weights)
    assert build_parser().parse_args(steps["tnet-s1"][3:]).locations == str(TASKS[task].glimpses)
    default = plan(ResultsConfig(task=task, multiscale=True, bagnet="shipped"))
    assert f"runs/results/{task}-ms-shipped/banks-s0" in default[0][1]


def test_one_seed_is_named_and_never_makes_a_difference() -> None:
    from agents.stats import difference
    from train.markdown import combined_markdown

    one = {"mean": 0.010, "std": 0.0, "n": 1, "values": [0.010]}
    other = {"mean": 0.020, "std": 0.0, "n": 1, "values": [0.020]}
    d = difference(other["values"], one["values"])
    assert d["mean"] == pytest.approx(0.01) and not d["differs"]
    row = {"seeds": 1, "coverage": {6: one}, "occlusion": {}}
    results = {"T": 6, "num_images": 100, "differences": {6: {"b - a": d}},
               "policies": {"a": {**row, "error": {6: one}}, "b": {**row, "error": {6: other}}}}
    text = combined_markdown(results, columns=(6,))
    assert "100 test images, one seed." in text and "(no difference shown)" in text
    assert "mean ± std" not in text


@pytest.mark.parametrize("attention", ["plain", "nam", "nam-spatial", "adcm"])
def test_attention_bagnets_and_the_interpretability_test(attention, tmp_path) -> None:
    cfg = ResultsConfig(attention=attention, bagnet_per_seed=True, interpretability=True,
                        interpretability_images=500, agents=["saccader", "maskable-ppo"],
                        agent_option=["saccader=--policy-epochs=2",
                                      "saccader=--location-epochs=1"])
    out = output_folder(cfg)
    assert out.name == "cluttered-mnist" + ("" if attention == "plain" else f"-{attention}")
    parser = build_parser()
    flags = {"plain": (False, False, False), "nam": (True, False, False),
             "nam-spatial": (True, True, False), "adcm": (False, False, True)}[attention]
    for name, cmd, _ in plan(cfg):
        args = parser.parse_args(cmd[3:])
        if name.startswith("bagnet-"):
            assert (args.nam, args.nam_spatial, args.adcm) == flags
        if name.startswith("saccader-"):  # the agent's own options come after the task's
            assert (args.location_epochs, args.policy_epochs) == (1, 2)
        if name.startswith("maskable-ppo-"):
            assert "--policy-epochs=2" not in cmd
        if name.startswith("evaluate-"):
            seed = name[-1]
            assert args.interpretability and args.interpretability_images == 500
            assert args.attention_checkpoint == (None if attention == "plain" else [
                f"attention={out / f'bagnet-s{seed}' / 'bagnet.pt'}"])


def test_attention_and_agent_options_are_checked() -> None:
    for cfg in (ResultsConfig(attention="cbam"), ResultsConfig(attention="nam", bagnet="shipped"),
                ResultsConfig(attention="adcm", multiscale=True),
                ResultsConfig(interpretability=True, multiscale=True),
                ResultsConfig(agent_option=["dqn=--lr=1"]),
                ResultsConfig(agent_option=["saccader=policy-epochs"]),
                ResultsConfig(agents=["saccader"], agent_option=["reinforce=--iterations=9"])):
        with pytest.raises(UsageError):
            plan(cfg)


def test_an_evaluation_without_the_asked_test_is_not_done(tmp_path) -> None:
    import json

    from train.results import _done

    marker = tmp_path / "results.json"
    asked, plain = ["evaluate", "--interpretability"], ["evaluate"]
    assert not _done(marker, plain)
    marker.write_text(json.dumps({"policies": {}}))
    assert _done(marker, plain) and not _done(marker, asked)
    marker.write_text(json.dumps({"policies": {}, "interpretability": {}}))
    assert _done(marker, asked)
    marker.write_text("{broken")
    assert not _done(marker, asked)
