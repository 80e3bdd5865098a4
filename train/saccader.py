"""``glimpse train saccader``: the Saccader's three training steps (Elsayed et al. 2019).

1. BagNet with the per-location loss (``glimpse pretrain-bagnet``) and its feature banks
   (``glimpse extract-features``); ``--stage all`` runs both first, into ``OUT/bagnet.pt``
   and ``OUT/banks``.
2. ``--stage locations``: BagNet frozen (the banks are fixed tensors); 12 glimpses whose targets
   are the ordered-logits cells of the predicted class (the cells with the largest logit of the
   image-level prediction, best first); cross-entropy of each glimpse's masked location
   logits against its target, the cell state following the targets.
3. ``--stage policy``: REINFORCE; reward 1 if and only if the prediction after T = 6 sampled
   glimpses is right; advantage = reward - batch mean; plus the cross-entropy of the
   per-glimpse logits at the sampled cells (fine-tunes the classifier where the policy looks)
   and L2 8e-5 on the weights.

Every stage logs to TensorBoard (``OUT/tb``), evaluates on val after each epoch, checkpoints
atomically (``OUT/locations.pt``, ``OUT/policy.pt``; ``--resume`` continues one) and the
last stage writes ``OUT/results.json``: test error at each T of ``--eval-glimpses`` for the
Saccader (argmax cells, its own classifier), its cells read with BagNet's logits, ordered
logits, random cells and the full image, measured by :func:`agents.evaluation.compare`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.evaluation import compare
from agents.loading import check_trained_on
from agents.policies import OrderedLogitsPolicy, RandomPolicy, SaccaderAgent
from agents.saccader import FORMAT, Saccader, load_saccader
from glimpse_gym.envs.source import GlimpseSource, load_source
from glimpse_gym.errors import UsageError
from glimpse_gym.fileio import save_payload
from glimpse_gym.readout import ordered_logit_cells
from train.run import (
    AgentOptions,
    SaccaderOptions,
    prepare_out,
    setup,
    split_source,
    write_results,
)
from train.saccader_data import SaccaderSplit

STAGES = ("all", "locations", "policy", "both", "finetune", "evaluate")


@dataclass
class SaccaderConfig(AgentOptions, SaccaderOptions):
    """Options of ``glimpse train saccader``."""

    stage: str = "both"
    """all (steps 1-3: BagNet, banks, locations, policy), both (steps 2-3 on existing banks),
    locations (step 2), policy (step 3), finetune (the paper's step 3: OUT/policy.pt and the
    BagNet trained together on the banks' images, into OUT/finetuned/) or evaluate (only the
    test evaluation of OUT/policy.pt)"""
    dataset: str | None = None
    """--stage all: dataset of step 1 (see 'glimpse datasets'; default: digits)"""
    root: str | None = None
    """--stage all: folder holding the dataset's files"""
    data_option: list[str] = field(default_factory=list)
    """--stage all: dataset option KEY=VALUE, e.g. canvas_size=100, pieces=8, path=my.npz"""
    bagnet_epochs: int = 15
    """--stage all: BagNet epochs of step 1"""
    bagnet_image_loss: float = 1.0
    """--stage all: weight of the image-level loss beside the per-location loss in step 1"""
    glimpses: int = 6
    """T of step 3 (the policy stage)"""
    banks: str | None = None
    """folder with train/, val/ and test/ feature banks (default: the embedded digits model;
    with --stage all: OUT/banks, written by step 1)"""
    location_epochs: int = 3
    """epochs of step 2"""
    policy_epochs: int = 10
    """epochs of step 3"""
    classification_weight: float = 1.0
    """weight of the per-glimpse cross-entropy in step 3"""
    finetune_epochs: int = 2
    """--stage finetune: epochs over the training images"""
    finetune_lr: float = 1e-4
    """--stage finetune: Adam learning rate of BagNet and Saccader (cosine decay)"""
    bagnet_checkpoint: str | None = None
    """--stage finetune: the BagNet the banks were written with (.pt)"""
    eval_glimpses: str = "1,2,4,6,8,12"
    """numbers of glimpses to report test error at"""
    out: str = "runs/saccader"
    """output folder: locations.pt, policy.pt, results.json, tb/"""


def _sources(cfg: SaccaderConfig) -> dict[str, GlimpseSource]:
    return {s: load_source(**split_source(cfg.banks, s)) for s in ("train", "val", "test")}


def build_saccader(source: GlimpseSource, cfg: SaccaderConfig) -> Saccader:
    return Saccader(source.feature_dim, source.num_classes, cfg.where_channels,
                    cfg.mixed_channels, head=(source.head_weight, source.head_bias))


def location_loss(net: Saccader, what: torch.Tensor, logits: torch.Tensor,
                  glimpses: int) -> torch.Tensor:
    """Step 2: cross-entropy of each glimpse's location logits against the ordered-logits
    target. ``what`` and ``logits`` are BagNet's outputs; they are detached here, and the
    classifier is not used, so no gradient reaches BagNet or the classifier."""
    what, logits = what.detach(), logits.detach()
    targets = ordered_logit_cells(logits, glimpses)  # [B, T]
    rollout = net.rollout(what, glimpses, sample=False, teacher=targets)
    return F.cross_entropy(rollout.location_logits.flatten(0, 1), targets.flatten())


def policy_loss(net: Saccader, what: torch.Tensor, labels: torch.Tensor, glimpses: int,
                l2: float, classification_weight: float,
                generator: torch.Generator | None = None,
                detach: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Step 3: REINFORCE (batch-mean baseline) + per-glimpse cross-entropy + L2. With
    ``detach=False`` the gradient also flows into whatever computed ``what`` (the BagNet,
    in the paper's variant)."""
    what = what.detach() if detach else what
    rollout = net.rollout(what, glimpses, sample=True, generator=generator)
    logits = net.classify(what, rollout.cells)  # [B, T, K]
    reward = (logits.mean(dim=1).argmax(dim=1) == labels).float()
    advantage = reward - reward.mean()
    reinforce = -(advantage[:, None] * rollout.log_probs).sum(dim=1).mean()
    ce = F.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(glimpses))
    decay = sum((p ** 2).sum() for n, p in net.named_parameters() if n.endswith("weight")
                and p.dim() > 1)
    loss = reinforce + classification_weight * ce + l2 * decay
    return loss, {"reward": reward.mean().item(), "reinforce": reinforce.item(),
                  "cross_entropy": ce.item(), "entropy": rollout.entropy.mean().item()}


@torch.no_grad()
def val_error(net: Saccader, split: SaccaderSplit, glimpses: int, batch_size: int = 1024,
              limit: int | None = None) -> float:
    """The Saccader's error after ``glimpses`` argmax glimpses, classified by its own head,
    on the first ``limit`` images of ``split`` (the per-epoch check; the final numbers come
    from :func:`final_errors`)."""
    net.eval()
    wrong, n = 0, 0
    for what, _, labels in split.batches(batch_size, limit=limit):
        cells = net.rollout(what, glimpses, sample=False).cells
        prediction = net.classify(what, cells).mean(dim=1).argmax(dim=1)
        wrong += int((prediction != labels).sum())
        n += len(labels)
    net.train()
    return wrong / n


def final_errors(net: Saccader, source: GlimpseSource, glimpses: list[int], seed: int = 0,
                device: str | torch.device = "cpu") -> dict[str, dict[int, float]]:
    """Test error at each T of ``glimpses``, by :func:`agents.evaluation.compare`: the
    Saccader (its argmax cells, its own head), its cells read with BagNet's logits, ordered
    logits, random cells and the full image."""
    policies = [SaccaderAgent(net, "saccader", device=device),
                SaccaderAgent(net, "saccader-bagnet-head", own_head=False, device=device),
                OrderedLogitsPolicy(), RandomPolicy(seed)]
    table = compare(policies, source, max_glimpses=max(glimpses), device=device)
    net.train()
    return {name: {t: row["error"][t] for t in glimpses} for name, row in table.items()}


def evaluate_through_env(net: Saccader, cfg: SaccaderConfig) -> dict[str, float]:
    """The same network as an SB3 :class:`~agents.SaccaderPolicy` on Glimpse-v0's test split,
    classifying with its own head (``head=``): test accuracy and coverage at T."""
    from stable_baselines3 import PPO

    from agents.evaluation import evaluate_on_split, sb3_policy
    from agents.sb3_saccader import SaccaderPolicy, load_saccader_weights
    from glimpse_gym.sb3 import SB3VecEnv

    split = split_source(cfg.banks, "test")
    probe = SB3VecEnv(num_envs=1, glimpses=cfg.glimpses, **split)
    h, w, _ = probe.get_attr("feature_shape")[0]
    model = PPO(SaccaderPolicy, probe, n_steps=2, batch_size=2, device="cpu",
                policy_kwargs={"num_classes": net.num_classes, "grid": (h, w),
                               "where_channels": cfg.where_channels,
                               "mixed_channels": cfg.mixed_channels})
    load_saccader_weights(model.policy, net.state_dict())
    weight, bias = net.head()
    result = evaluate_on_split(sb3_policy(model), glimpses=cfg.glimpses, observation="full",
                               head=(weight.numpy(), bias.numpy()), **split)
    print(f"through Glimpse-v0 (SaccaderPolicy, its own head): test accuracy at "
          f"T={cfg.glimpses} {result['accuracy']:.4f}, coverage {result['coverage']:.3f}")
    return result


def _checkpoint(path: Path, net: Saccader, opt: torch.optim.Optimizer, stage: str,
                epoch: int, cfg: SaccaderConfig, source: GlimpseSource,
                history: list[dict[str, Any]], sched: Any = None) -> None:
    save_payload({
        "format": FORMAT, "stage": stage, "epoch": epoch, "config": asdict(cfg),
        "net": {"feature_dim": net.feature_dim, "num_classes": net.num_classes,
                "where_channels": cfg.where_channels, "mixed_channels": cfg.mixed_channels},
        "state_dict": net.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict() if sched is not None else None,
        "bank": source.description, "history": history,
        "rng": torch.get_rng_state(),
    }, path)


def _run_stage(stage: str, cfg: SaccaderConfig, net: Saccader, splits: dict[str, SaccaderSplit],
               out: Path, writer: SummaryWriter) -> list[dict[str, Any]]:
    epochs = cfg.location_epochs if stage == "locations" else cfg.policy_epochs
    path = out / f"{stage}.pt"
    params = net.policy_parameters() if stage == "locations" else list(net.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    steps_per_epoch = math.ceil(len(splits["train"]) / cfg.batch_size)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
             if stage == "policy" else None)
    start_epoch, history = 0, []
    if cfg.resume and path.exists():
        ckpt = _load_trained(net, path, splits["train"].source)
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None and ckpt["scheduler"] is not None:
            sched.load_state_dict(ckpt["scheduler"])
        start_epoch, history = ckpt["epoch"], ckpt["history"]
        torch.set_rng_state(ckpt["rng"])
        print(f"{stage}: resuming after epoch {start_epoch} of {epochs}")
    g = torch.Generator().manual_seed(cfg.seed + (0 if stage == "locations" else 1))
    for _ in range(start_epoch):  # the batch orders of the epochs already run
        torch.randperm(len(splits["train"]), generator=g)
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, epochs):
        t0, seen, sums = time.perf_counter(), 0, {}
        bar = tqdm(splits["train"].batches(cfg.batch_size, g), total=steps_per_epoch,
                   desc=f"{stage} epoch {epoch + 1}/{epochs}", disable=not cfg.progress,
                   dynamic_ncols=True)
        for what, logits, labels in bar:
            if stage == "locations":
                loss = location_loss(net, what, logits, cfg.location_glimpses)
                stats = {"loss": loss.item()}
            else:
                loss, stats = policy_loss(net, what, labels, cfg.glimpses, cfg.l2,
                                          cfg.classification_weight)
                stats["loss"] = loss.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            seen += len(labels)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v * len(labels)
                writer.add_scalar(f"{stage}/{k}", v, step)
            bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items() if k in ("loss", "reward")})
        row = {"epoch": epoch + 1, **{k: v / seen for k, v in sums.items()},
               "val_error": val_error(net, splits["val"], cfg.glimpses,
                                      limit=cfg.eval_images),
               "images_per_s": seen / (time.perf_counter() - t0)}
        history.append(row)
        writer.add_scalar(f"{stage}/val_error", row["val_error"], step)
        writer.add_scalar(f"{stage}/images_per_s", row["images_per_s"], step)
        print(f"{stage} epoch {epoch + 1}: val error at T={cfg.glimpses} "
              f"{row['val_error']:.2%}, {row['images_per_s']:.0f} images/s")
        _checkpoint(path, net, opt, stage, epoch + 1, cfg, splits["train"].source, history,
                    sched)
    return history


def _load_trained(net: Saccader, path: Path, source: GlimpseSource) -> dict[str, Any]:
    """Load a stage's checkpoint into ``net``, after checking it was trained on banks like
    ``source``; return the checkpoint."""
    _, ckpt = load_saccader(path)
    check_trained_on(str(path), {**ckpt.get("bank", {}), **ckpt["net"]}, source)
    net.load_state_dict(ckpt["state_dict"])
    return ckpt


def _step1(cfg: SaccaderConfig, out: Path) -> str:
    """BagNet and banks into OUT: made anew with --overwrite, continued with --resume (the
    BagNet's own --resume, then the banks that are missing)."""
    from train.extract_features import ExtractConfig, extract_features
    from train.pretrain_bagnet import PretrainConfig, pretrain_bagnet
    ckpt, banks = out / "bagnet.pt", out / "banks"
    if cfg.overwrite or not ckpt.exists() or cfg.resume:
        pretrain_bagnet(PretrainConfig(dataset=cfg.dataset or "digits", root=cfg.root,
                                       data_option=list(cfg.data_option), seed=cfg.seed,
                                       epochs=cfg.bagnet_epochs, out=str(ckpt),
                                       image_loss=cfg.bagnet_image_loss,
                                       resume=ckpt.exists() and not cfg.overwrite,
                                       overwrite=cfg.overwrite, device=cfg.device,
                                       threads=cfg.threads, progress=cfg.progress))
    if cfg.overwrite or not all((banks / s / "meta.json").exists()
                                for s in ("train", "val", "test")):
        extract_features(ExtractConfig(checkpoint=str(ckpt), out=str(banks), root=cfg.root,
                                       overwrite=True, device=cfg.device, threads=cfg.threads,
                                       progress=cfg.progress))
    return str(banks)


def train_saccader(cfg: SaccaderConfig) -> dict[str, Any]:
    """Run the stage(s) asked for; return the results (also in OUT/results.json)."""
    if cfg.stage not in STAGES:
        raise UsageError(f"--stage must be one of {', '.join(STAGES)}, got {cfg.stage!r}")
    if cfg.stage != "all" and (cfg.dataset or cfg.data_option):
        raise UsageError("--dataset and --data-option choose the data of step 1, which only "
                         "--stage all runs; the other stages read --banks")
    try:
        glimpse_list = sorted({int(t) for t in cfg.eval_glimpses.split(",")})
    except ValueError:
        raise UsageError(f"--eval-glimpses must be comma-separated integers, got "
                         f"{cfg.eval_glimpses!r}") from None
    start = time.perf_counter()
    device = setup(cfg.device, cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out).expanduser()
    if cfg.stage not in ("evaluate", "finetune"):  # these two read OUT/policy.pt
        stage_files = {"policy": ("policy.pt",), "all": ("bagnet.pt", "locations.pt", "policy.pt")
                       }.get(cfg.stage, ("locations.pt", "policy.pt"))
        prepare_out(out, checkpoints=stage_files, resume=cfg.resume, overwrite=cfg.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.stage == "all":
        cfg.banks = _step1(cfg, out)
    sources = _sources(cfg)
    splits = {s: SaccaderSplit(src, device) for s, src in sources.items()}
    net = build_saccader(sources["train"], cfg).to(device)
    writer = SummaryWriter(str(out / "tb"))
    results: dict[str, Any] = {"config": asdict(cfg), "bank": sources["train"].description,
                               "data": {s: src.description for s, src in sources.items()}}
    if cfg.stage in ("evaluate", "finetune"):  # keep the histories of an earlier results.json
        if not (out / "policy.pt").exists():
            raise UsageError(f"--stage {cfg.stage} needs {out / 'policy.pt'}; train it first")
        _load_trained(net, out / "policy.pt", sources["train"])
        try:
            earlier = json.loads((out / "results.json").read_text())
        except (OSError, ValueError):  # none, or unreadable: the histories are not kept
            earlier = {}
        results.update({k: earlier[k] for k in ("locations", "policy", "finetuned")
                        if k in earlier})
    if cfg.stage == "finetune":
        from train.saccader_finetune import finetune
        results["finetuned"] = finetune(cfg, net, sources, out, device, writer)
        _load_trained(net, out / "policy.pt", sources["train"])  # the bank-trained policy
    if cfg.stage in ("all", "both", "locations"):
        results["locations"] = _run_stage("locations", cfg, net, splits, out, writer)
    if cfg.stage in ("all", "both", "policy"):
        if cfg.stage == "policy":  # start from step 2's network
            if not (out / "locations.pt").exists():
                raise UsageError(f"--stage policy starts from step 2's "
                                 f"{out / 'locations.pt'}; run --stage locations first")
            _load_trained(net, out / "locations.pt", sources["train"])
        results["policy"] = _run_stage("policy", cfg, net, splits, out, writer)
    results["test_error"] = test = final_errors(net, sources["test"], glimpse_list,
                                                cfg.seed, device)
    results["test_images"] = sources["test"].num_images
    results["through_env"] = evaluate_through_env(net, cfg)
    results["wall_time_s"] = time.perf_counter() - start
    writer.close()
    print(f"test error ({results['test_images']} images) at T = {glimpse_list}:")
    for name, row in test.items():
        print(f"  {name:21s} " + "  ".join(f"{row[t]:7.2%}" for t in glimpse_list))
    write_results(out, results, ["bagnet.pt", "banks", "locations.pt", "policy.pt", "tb"])
    return results


__all__ = ["SaccaderConfig", "final_errors", "load_saccader", "location_loss", "policy_loss",
           "train_saccader", "val_error"]
