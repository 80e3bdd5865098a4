"""The ``glimpse`` command: one subcommand per pipeline step.

A user's mistake (a missing or damaged file, a wrong option, data that cannot be used) and
a file system's refusal (no space, no permission) are answered in one line,
``glimpse: error: ...``, with exit status 2 and no traceback; any other exception is a bug
and shows its traceback. ``--debug`` shows the traceback of
mistakes too. An interrupted run (Ctrl-C) says how to continue it and exits with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from glimpse_gym.distributed import in_group
from glimpse_gym.errors import GlimpseGymError, UsageError
from train.config import add_dataclass_arguments, config_from_args


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless its help already says it); keeps paragraphs."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default in (None, argparse.SUPPRESS):
            return text
        if action.option_strings and action.nargs != 0 or isinstance(
                action, argparse.BooleanOptionalAction):
            text += " (default: %(default)s)"
        return text


COMMANDS = {
    "demo": ("train.demo", "DemoConfig", "demo",
             "the main job on the embedded default (offline, about a minute)"),
    "datasets": ("train.tools", "DatasetsConfig", "list_datasets_cmd",
                 "list the dataset registry"),
    "pretrain-bagnet": ("train.pretrain_bagnet", "PretrainConfig", "pretrain_bagnet",
                        "step 1: train a BagNet with the per-location loss"),
    "extract-features": ("train.extract_features", "ExtractConfig", "extract_features",
                         "run a BagNet over dataset splits and write feature banks"),
    "bank-info": ("train.tools", "BankInfoConfig", "bank_info",
                  "check a feature bank and print its metadata"),
    "export-bagnet": ("train.tools", "ExportConfig", "export_bagnet",
                      "strip a training checkpoint down to what using it needs"),
    "train ppo": ("train.ppo", "PPOConfig", "train_ppo",
                  "PPO (stable-baselines3) on Glimpse-v0"),
    "train maskable-ppo": ("train.ppo", "PPOConfig", "train_maskable_ppo",
                           "MaskablePPO (sb3-contrib) on Glimpse-v0, visited cells masked"),
    "evaluate": ("train.evaluate", "EvaluateConfig", "evaluate",
                 "compare glimpse policies: accuracy at T = 1..Tmax, coverage, occlusion"),
    "evaluate-multiscale": ("train.evaluate_multiscale", "MultiScaleEvalConfig",
                            "evaluate_multiscale",
                            "policies across scales against each level alone: error and cost"),
    "train reinforce": ("train.reinforce", "ReinforceConfig", "train_reinforce",
                        "the RAM-style REINFORCE baseline on compact glimpse observations"),
    "train saccader": ("train.saccader", "SaccaderConfig", "train_saccader",
                       "the Saccader's training steps (BagNet, locations, policy)"),
    "train multiscale-ppo": ("train.ppo_multiscale", "MultiScalePPOConfig",
                             "train_multiscale_ppo",
                             "MaskablePPO on MultiScale-v0 (cells under closed parents masked)"),
    "train tnet": ("train.tnet", "TNetConfig", "train_tnet",
                   "TNet on multi-scale banks: top-k cells per level, features of all levels"),
    "train multiscale-saccader": ("train.multiscale_saccader", "MultiScaleSaccaderConfig",
                                  "train_multiscale_saccader",
                                  "the Saccader on multi-scale banks (steps 2 and 3)"),
    "results": ("train.results", "ResultsConfig", "run_results",
                "a standard task's whole table over seeds (BagNet, agents, evaluation)"),
    "ablation": ("train.ablation", "AblationConfig", "run_ablation",
                 "soft-attention BagNets (NAM, ADCM) against plain ones, over seeds"),
}


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="glimpse",
        description="Glimpse Gym: hard-attention image classification as reinforcement "
                    "learning. Each subcommand is one step of the pipeline; "
                    "'glimpse SUBCOMMAND --help' explains its options.")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of errors that are the user's mistakes "
                             "(bugs always show theirs)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (module, cfg_name, fn_name, summary) in COMMANDS.items():
        mod = importlib.import_module(module)
        cls = getattr(mod, cfg_name)
        description = (mod.__doc__ or summary).strip().replace("``", "'")
        target, leaf = sub, name
        if " " in name:  # "train ppo": a subcommand of the "train" group
            group, leaf = name.split(" ", 1)
            if group not in groups:
                g = sub.add_parser(group, help=f"{group} an agent (see 'glimpse {group} -h')")
                groups[group] = g.add_subparsers(dest=f"{group}_command", required=True,
                                                 metavar="AGENT")
            target = groups[group]
        p = target.add_parser(leaf, help=summary, description=description,
                              formatter_class=HelpFormatter)
        add_dataclass_arguments(p, cls)
        p.set_defaults(_run=getattr(mod, fn_name))
    return parser


def _resume_hint(cfg: object) -> str:
    """How to continue an interrupted run of a command that can resume."""
    if not hasattr(cfg, "resume"):
        return ""
    again = "with --resume instead of --overwrite" if getattr(cfg, "overwrite", False) else (
        "with --resume")
    return (f"; if a checkpoint was saved, it is in {cfg.out}: run the same command {again} "
            "to continue")


RL_MODULES = ("stable_baselines3", "sb3_contrib", "tensorboard", "matplotlib")
"""What the ``rl`` extra installs; the ``glimpse`` command needs all of it."""


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in RL_MODULES:
            raise
        print(f"glimpse: error: the glimpse command needs the RL extra ({exc.name} is not "
              "installed): run pip install '.[rl]' in the source folder", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    cfg = config_from_args(args._config_cls, args)
    try:
        args._run(cfg)
    except BrokenPipeError:  # e.g. 'glimpse bank-info | head'
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (GlimpseGymError, OSError) as exc:  # OSError: a file system's no (space, rights)
        if args.debug:
            traceback.print_exc()
        rank = os.environ.get("RANK", "0")  # in a torchrun group a mistake is said once, by
        if rank in ("", "0"):                 # rank 0; other failures by the rank they hit
            print(f"glimpse: error: {exc}", file=sys.stderr)
        elif not (isinstance(exc, UsageError) and in_group()):
            print(f"glimpse: error (rank {rank}): {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"glimpse: interrupted{_resume_hint(cfg)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
