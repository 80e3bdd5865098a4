"""Step 1: pretrain a BagNet with the per-location loss.

Every cell's logits are trained to predict the image label (cross-entropy averaged over
cells), as in Saccader's first training step (Elsayed et al. 2019); the image-level
prediction is the argmax of the spatially averaged logits. AdamW, linear warm-up then cosine
decay, TensorBoard scalars, a progress bar, an atomic checkpoint every epoch and ``--resume``.

Under ``torchrun --nproc-per-node=N`` it trains with DistributedDataParallel (gloo on CPUs,
NCCL on GPUs): each step's ``--batch-size`` images are split evenly over the N processes
(:func:`glimpse_gym.distributed.rank_batches`), so the steps, the schedule and the checkpoint
are those of one process and ``--resume`` works with any number of processes; rank 0 alone
evaluates, prints and writes the checkpoint. BatchNorm normalises each process's part of a
batch by its own statistics (no SyncBatchNorm); DDP keeps the running statistics rank 0's.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from glimpse_gym.bagnet import (
    build_bagnet,
    evaluate_bagnet,
    image_logits,
    iterate_batches,
    load_backbone,
    load_checkpoint,
    preprocess,
    save_checkpoint,
)
from glimpse_gym.datasets import ImageDataset, dataset_options, make_dataset
from glimpse_gym.distributed import all_sum, process_group, rank_batches
from glimpse_gym.errors import CheckpointError, UsageError
from glimpse_gym.fileio import write_json
from glimpse_gym.multiscale import (
    batchnorm_statistics,
    level_size,
    resize_images,
)
from train.config import parse_options
from train.pretrain_scales import by_scale, parse_scales
from train.run import TrainOptions, prepare_out, setup


@dataclass
class PretrainConfig(TrainOptions):
    """Options of ``glimpse pretrain-bagnet``."""

    dataset: str = "digits"
    """dataset registry name (``glimpse datasets`` lists them)"""
    root: str | None = None
    """folder holding the dataset's files (mnist, cluttered-mnist, cifar10, imagefolder)"""
    data_option: list[str] = field(default_factory=list)
    """dataset option KEY=VALUE, e.g. canvas_size=100, pieces=8, path=my.npz"""
    download: bool = False
    """let torchvision download a missing dataset (never done otherwise)"""
    arch: str = "auto"
    """bagnet-tiny, bagnet-small, bagnet9/17/33, custom; auto: tiny up to 40 px, else small"""
    kernels: str | None = None
    """custom arch: kernel size of each valid conv, comma-separated, e.g. 5,3,3,3,1,1"""
    strides: str | None = None
    """custom arch: stride of each conv, comma-separated, e.g. 1,2,2,1,1,1"""
    widths: str | None = None
    """custom arch: channels of each conv, comma-separated, e.g. 32,64,128,128,128,128"""
    width: int | None = None
    """base width of bagnet-small / bagnet-tiny (default: the factory's)"""
    feature_dim: int | None = None
    """D, channels of the what-features of bagnet-small / bagnet-tiny (default: the factory's)"""
    nam: bool = False
    """add NAM channel attention (bagnet-small / bagnet-tiny)"""
    nam_l1: float = 1e-4
    """L1 penalty on the NAM gammas and lambdas (with --nam or --nam-spatial)"""
    nam_spatial: bool = False
    """add NAM's spatial branch (bagnet-small / bagnet-tiny / custom; tied to the images' size)"""
    adcm: bool = False
    """add ADCM: attention used as dropout of channels and positions in training, the
    identity in eval (bagnet-small / bagnet-tiny / custom)"""
    bottleneck: int | None = None
    """D: put a learned 1x1 bottleneck to D what-features, with a new per-cell head, on the
    architecture (compact banks for big backbones, e.g. 64 on bagnet33)"""
    backbone_weights: str | None = None
    """with --bottleneck: start the backbone from these weights (a published BagNet .pth
    state_dict, or a pretrain-bagnet checkpoint of the same architecture; its head unused)"""
    freeze_backbone: bool = False
    """with --bottleneck: train only the bottleneck and the head (the backbone's weights and
    BatchNorm statistics stay as loaded)"""
    epochs: int = 10
    """passes over the training split"""
    batch_size: int = 128
    """images per optimisation step"""
    lr: float = 3e-3
    """peak AdamW learning rate"""
    weight_decay: float = 5e-4
    """AdamW weight decay"""
    warmup: float = 0.03
    """fraction of the steps spent warming the learning rate up linearly, then cosine to 0"""
    image_loss: float = 0.0
    """weight of an extra cross-entropy on the image-level (averaged) logits; 0 = pure per-cell"""
    resample_canvases: bool = True
    """draw fresh canvas layouts (positions, clutter) every epoch for canvas datasets"""
    max_train_images: int | None = None
    """use only the first N training images (quick runs and tests)"""
    out: str = "runs/bagnet/checkpoint.pt"
    """checkpoint path (written atomically every epoch)"""
    logdir: str | None = None
    """TensorBoard folder (default: tb/ beside the checkpoint)"""
    eval_test: bool = True
    """evaluate on the test split at the end"""
    eval_batch_size: int = 512
    """images per batch in evaluation"""
    num_workers: int = 0
    """DataLoader workers for datasets read from disk (imagefolder)"""
    scales: str | None = None
    """train across scales for multi-scale banks: each batch resized by one of these
    comma-separated scales (rising, ending with 1; drawn at random per batch), e.g. 0.5,1;
    validation and test are reported at each scale"""
    bn_images: int = 8192
    """with --scales: training images that estimate each scale's own BatchNorm statistics
    at the end (stored in the checkpoint; extract-features --scales uses them per level)"""


def make_split(cfg: PretrainConfig, split: str, layout_seed: int = 0) -> ImageDataset:
    """The ``split`` of ``cfg``'s dataset as pretraining reads it (``layout_seed``: the
    canvas layouts of a later epoch, for datasets that draw them)."""
    opts: dict[str, Any] = dict(parse_options(cfg.data_option))
    accepted = dataset_options(cfg.dataset)
    opts.setdefault("seed", cfg.seed)
    if "root" in accepted and cfg.root is not None:
        opts.setdefault("root", cfg.root)
    if "download" in accepted:
        opts.setdefault("download", cfg.download)
    if layout_seed and "layout_seed" in accepted:
        opts["layout_seed"] = layout_seed
    return make_dataset(cfg.dataset, split, **opts)


def _arch(cfg: PretrainConfig, train: ImageDataset) -> tuple[str, dict[str, Any]]:
    arch = cfg.arch
    if arch == "auto":
        arch = "bagnet-tiny" if max(train.image_shape[1:]) <= 40 else "bagnet-small"
    kwargs: dict[str, Any] = {"num_classes": train.num_classes, "in_channels": train.image_shape[0]}
    if arch == "custom":
        if not (cfg.kernels and cfg.strides and cfg.widths):
            raise UsageError("--arch custom needs --kernels, --strides and --widths")
        for key in ("kernels", "strides", "widths"):
            try:
                kwargs[key] = [int(v) for v in getattr(cfg, key).split(",")]
            except ValueError:
                raise UsageError(f"--{key} must be comma-separated integers, got "
                                 f"{getattr(cfg, key)!r}") from None
    if arch in ("bagnet-small", "bagnet-tiny", "custom"):
        if cfg.width is not None and arch != "custom":
            kwargs["width"] = cfg.width
        if cfg.feature_dim is not None:
            kwargs["feature_dim"] = cfg.feature_dim
        kwargs["nam"] = cfg.nam
        if cfg.nam_spatial:  # (only when asked: the kwargs of older checkpoints stay valid)
            kwargs["nam_spatial"], kwargs["image_size"] = True, list(train.image_shape[1:])
        if cfg.adcm:
            kwargs["adcm"] = True
    elif cfg.nam or cfg.nam_spatial or cfg.adcm:
        raise UsageError(f"--nam, --nam-spatial and --adcm are options of bagnet-small, "
                         f"bagnet-tiny and custom, not of {arch}")
    if cfg.bottleneck is not None:
        if cfg.bottleneck < 1:
            raise UsageError(f"--bottleneck must be a positive number of features, got "
                             f"{cfg.bottleneck}")
        kwargs["bottleneck"] = cfg.bottleneck
    elif cfg.backbone_weights or cfg.freeze_backbone:
        raise UsageError("--backbone-weights and --freeze-backbone set up the backbone under "
                         "a bottleneck: add --bottleneck D")
    return arch, kwargs


def _build(cfg: PretrainConfig, arch: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    """The model, its backbone loaded and frozen as asked."""
    model = build_bagnet(arch, **kwargs)
    if cfg.backbone_weights:
        load_backbone(model, cfg.backbone_weights)
    if cfg.freeze_backbone:
        model.freeze_backbone()
    return model


def pretrain_bagnet(cfg: PretrainConfig) -> dict[str, Any]:
    """Train a BagNet with the per-location loss; return the final metrics and timings
    (under torchrun, on rank 0; the other ranks return those of the checkpoint they
    resumed, or nothing)."""
    device = setup(cfg.device, cfg.threads)
    with process_group(device) as group:
        return _pretrain(cfg, device if group is None else group.device, group)


def _pretrain(cfg: PretrainConfig, device: torch.device, group: Any) -> dict[str, Any]:
    wall_start = time.perf_counter()
    leader = group is None or group.leader
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out).expanduser()

    logdir = Path(cfg.logdir) if cfg.logdir else out.parent / "tb"

    # ---------------------------------------------------------------- data and model
    train_set = make_split(cfg, "train")
    val_set = make_split(cfg, "val")
    arch, arch_kwargs = _arch(cfg, train_set)
    prepare_out(out.parent, finished=(), checkpoints=(out.name,), resume=cfg.resume,
                overwrite=cfg.overwrite)
    model = _build(cfg, arch, arch_kwargs).to(device)
    net = model if group is None else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None)
    mean, std = list(train_set.mean), list(train_set.std)
    scales = parse_scales(cfg, model, train_set)
    num_train = len(train_set) if cfg.max_train_images is None else min(cfg.max_train_images,
                                                                        len(train_set))
    steps_per_epoch = math.ceil(num_train / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = max(1, int(cfg.warmup * total_steps))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg.lr, weight_decay=cfg.weight_decay)
    def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to 0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min((step + 1) / warmup_steps, 0.5 * (1 + math.cos(math.pi * progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    start_epoch, elapsed, cpu = 0, 0.0, 0.0
    if cfg.resume:
        ckpt = load_checkpoint(out)
        if ckpt["arch"] != arch or ckpt["arch_kwargs"] != arch_kwargs:
            raise CheckpointError(f"--resume: {out} holds {ckpt['arch']} {ckpt['arch_kwargs']}, "
                                  f"but this run asks for {arch} {arch_kwargs}")
        frozen = (ckpt.get("config") or {}).get("freeze_backbone", False)
        if frozen != cfg.freeze_backbone:
            raise CheckpointError(f"--resume: {out} was trained with --freeze-backbone "
                                  f"{frozen}: pass the same to continue it (or train afresh "
                                  "with --overwrite)")
        state = ckpt.get("train_state")
        if state is None:
            raise CheckpointError(f"--resume: {out} has no train_state (a final export?)")
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, elapsed = state["epoch"], state["elapsed_s"]
        cpu = state.get("cpu_s", float("nan"))  # (not recorded by older runs)
        mean, std = ckpt["normalization"]["mean"], ckpt["normalization"]["std"]
    writer = SummaryWriter(str(logdir)) if leader else None
    meta = dict(arch=arch, arch_kwargs=arch_kwargs, class_names=train_set.class_names, mean=mean,
                std=std, image_shape=list(train_set.image_shape),
                dataset={"name": cfg.dataset, "options": parse_options(cfg.data_option),
                         "seed": cfg.seed}, config=asdict(cfg))
    say = print if leader else (lambda *a, **k: None)
    say(f"pretrain-bagnet: {arch} rf={model.rf} stride={model.stride} "
        f"grid={model.grid_size(*train_set.image_shape[1:])} on {cfg.dataset} "
        f"({num_train} train / {len(val_set)} val images), device {device}"
        + (f", {group.world} processes" if group is not None else ""))

    # the last epoch's metrics (all of them if a finished run is resumed: only the final steps)
    metrics: dict[str, Any] = dict(ckpt.get("metrics", {})) if cfg.resume else {}
    train_state = state if cfg.resume else None  # kept in the final checkpoint for --resume
    train_images_seen, train_time = 0, 0.0
    for epoch in range(start_epoch, cfg.epochs):
        # ------------------------------------------------------------ rollout of one epoch
        if cfg.resample_canvases and epoch > 0:
            train_set = make_split(cfg, "train", layout_seed=epoch)
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(
            cfg.seed * 100_003 + epoch))[:num_train]
        mine, batch = rank_batches(order, cfg.batch_size, group)
        net.train()
        t0, c0 = time.perf_counter(), time.process_time()
        sums = {"loss": 0.0, "cell_acc": 0.0, "image_acc": 0.0, "images": 0.0}
        bar = tqdm(iterate_batches(train_set, batch, indices=mine, num_workers=cfg.num_workers),
                   total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and leader), leave=False)
        scale_rng = np.random.default_rng(cfg.seed * 1_000_003 + epoch)
        for images, labels in bar:
            if scales:  # one scale per batch
                s = scales[int(scale_rng.integers(len(scales)))]
                images = resize_images(images, level_size(images.shape[-2:], s))
            x = preprocess(images, mean, std, device)
            y = labels.to(device)
            # -------------------------------------------------------- loss
            logits = net(x).logits
            target = y[:, None, None].expand(-1, *logits.shape[2:])
            loss = F.cross_entropy(logits, target)
            if cfg.image_loss:
                loss = loss + cfg.image_loss * F.cross_entropy(image_logits(logits), y)
            if cfg.nam or cfg.nam_spatial:
                loss = loss + cfg.nam_l1 * model.regularizer()
            # -------------------------------------------------------- update
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                b = len(y)
                sums["loss"] += loss.item() * b
                sums["cell_acc"] += (logits.argmax(1) == target).float().mean().item() * b
                sums["image_acc"] += (image_logits(logits).argmax(1) == y).float().sum().item()
                sums["images"] += b
            bar.set_postfix(loss=f"{loss.item():.3f}")
        sums = all_sum(sums, group)  # every rank's share of the epoch
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        seen = int(sums.pop("images"))
        train_images_seen += seen
        elapsed += epoch_time
        cpu += time.process_time() - c0
        if not leader:  # rank 0 evaluates and writes the checkpoint; the others wait for it
            group.barrier()
            continue

        # ------------------------------------------------------------ evaluate and log
        val = evaluate_bagnet(model, val_set, mean, std, device, cfg.eval_batch_size,
                              cfg.num_workers)
        step = (epoch + 1) * steps_per_epoch
        train_stats = {k: v / seen for k, v in sums.items()}
        for k, v in train_stats.items():
            writer.add_scalar(f"train/{k}", v, step)
        for k in ("loss", "cell_acc", "image_acc", "image_error"):
            writer.add_scalar(f"val/{k}", val[k], step)
        writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
        writer.add_scalar("train/images_per_s", seen / epoch_time, step)
        metrics = {"epoch": epoch + 1, "train": train_stats, "val": val, "train_time_s": elapsed,
                   "train_cpu_s": cpu, "threads": torch.get_num_threads(),
                   "images_per_epoch": num_train}
        if scales:
            metrics["val_by_scale"] = by_scale(model, val_set, scales, mean, std, device, cfg)
            for key, row in metrics["val_by_scale"].items():
                writer.add_scalar(f"val/image_error_x{key}", row["image_error"], step)
        print(f"epoch {epoch + 1}/{cfg.epochs}: loss {train_stats['loss']:.4f} "
              f"train image acc {train_stats['image_acc']:.4f} | val image error "
              f"{val['image_error']:.4%} cell acc {val['cell_acc']:.4f} | "
              f"{seen / epoch_time:.0f} img/s")
        train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "epoch": epoch + 1, "elapsed_s": elapsed, "cpu_s": cpu,
                       "config": asdict(cfg)}
        save_checkpoint(out, model, metrics=metrics, train_state=train_state, **meta)
        if group is not None:
            group.barrier()
    if not leader:
        return metrics

    bn_by_scale = None
    if scales and cfg.resample_canvases and start_epoch >= cfg.epochs > 1:
        train_set = make_split(cfg, "train", layout_seed=cfg.epochs - 1)  # the last epoch's
    if scales:  # each scale's own BatchNorm statistics, from training images
        stats = batchnorm_statistics(model, train_set.images[:cfg.bn_images], scales, mean,
                                     std, device, cfg.eval_batch_size)
        model.load_state_dict(stats.pop("1"), strict=False)
        bn_by_scale = stats
        metrics["val_by_scale"] = by_scale(model, val_set, scales, mean, std, device, cfg,
                                           bn_by_scale)
        metrics["val"] = metrics["val_by_scale"]["1"]
        print(f"BatchNorm statistics per scale, from {min(cfg.bn_images, len(train_set))} "
              "training images: val image error " + ", ".join(
                  f"x{k} {row['image_error']:.2%}" for k, row in metrics["val_by_scale"].items()))
    # ---------------------------------------------------------------- final test
    if cfg.eval_test:
        test_set = make_split(cfg, "test")
        test = evaluate_bagnet(model, test_set, mean, std, device, cfg.eval_batch_size,
                               cfg.num_workers)
        metrics["test"] = test
        if scales:
            metrics["test_by_scale"] = by_scale(model, test_set, scales, mean, std, device, cfg,
                                                bn_by_scale)
            print("test image error by scale: " + ", ".join(
                f"x{k} {row['image_error']:.2%}" for k, row in metrics["test_by_scale"].items()))
        writer.add_scalar("test/image_error", test["image_error"], cfg.epochs)
        writer.add_scalar("test/cell_acc", test["cell_acc"], cfg.epochs)
        print(f"test: image error {test['image_error']:.4%}, cell acc {test['cell_acc']:.4f} "
              f"({test['num_images']} images)")
    if train_images_seen:
        metrics["train_images_per_s"] = train_images_seen / train_time
    metrics["wall_time_s"] = time.perf_counter() - wall_start  # this invocation, end to end
    save_checkpoint(out, model, metrics=metrics, train_state=train_state,
                    bn_by_scale=bn_by_scale, **meta)
    write_json(out.parent / "metrics.json", metrics)
    writer.close()
    print(f"wrote: {out} (checkpoint), {out.parent / 'metrics.json'}, TensorBoard logs in "
          f"{logdir}")
    return metrics
