"""Named scale presets: one knob that sizes data, models and runs for a machine.

- ``smoke``: tests and CI; seconds per notebook.
- ``default``: what ``make book`` runs on a 2-core CPU within its 45-minute budget: 16 x 16 regions
  per city, so about 20 training runs (pretraining, baselines, ablations) fit; a demonstration of
  every page, with test splits of about 50 regions, too few for conclusions.
- ``full``: the ``make results`` tier: the default's models on 32 x 32 cities (about 200 test
  regions a city), three pretraining seeds, both splits (random and spatially blocked), and
  pretraining that runs until its validation loss stops improving (within a step cap) with the
  learning rate cut on plateaus; many CPU-hours here (see the README).
- ``paper``: the papers' sizes (224/256 px tiles, ViT-B/16); for a GPU.

Every pretraining run holds out ``pretrain_val_fraction`` of its tiles (label-free) and evaluates
its loss on them ``evals_per_epoch`` times an epoch; ``patience`` > 0 stops it when that loss has not
improved for ``patience`` evaluations spanning at least two epochs. ``pretrain_epochs`` is the cap.
The ``default`` scale keeps a short cap (six epochs) to fit ``make book``'s budget, so its runs
may stop by the cap before they plateau, and its pages say which way each stopped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Scale:
    """Sizes that every experiment reads from one preset."""

    name: str
    grid: int  # regions per side of a SynthCity city (Definition 1: an even grid)
    tile_px: int  # satellite tile side in pixels
    street_px: int  # street-view image side in pixels
    max_street_views: int  # street views rendered per region at most (some regions get none)
    pretrain_seeds: int  # independent pretraining runs (each with its own split)
    probe_seeds: int  # MLP-probe seeds per pretraining run
    model_size: str = "cpu"  # suffix of the named model configs: "tiny" | "cpu" | "paper"
    pretrain_epochs: int = 6  # step cap of every image(-text) pretraining run, in epochs (UrbanCLIP, UrbanLN, ...)
    lr_schedule: str = "cosine"  # "cosine" over the cap (short capped runs) | "plateau" (cut on validation plateaus)
    patience: int = 5  # evaluations without a validation improvement before a run stops (0 = run to the cap)
    plateau_patience: int = 3  # evaluations without improvement before the lr is halved (lr_schedule="plateau")
    evals_per_epoch: int = 2  # validation-loss evaluations per epoch
    pretrain_val_fraction: float = 0.1  # tiles held out of pretraining to decide its length (label-free)

    def to_dict(self) -> dict:
        """Plain dict, for provenance columns and JSON."""
        return asdict(self)

    def data_dict(self) -> dict:
        """The fields that shape a SynthCity city (its cache key); model and run sizes excluded."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("name", "model_size", "pretrain_epochs", "pretrain_seeds", "probe_seeds", "lr_schedule",
                             "patience", "plateau_patience", "evals_per_epoch", "pretrain_val_fraction")}

    def early_stopping(self) -> dict:
        """The :class:`~urbanlib.train.TrainConfig` fields that make a run stop on its validation loss."""
        return {"schedule": self.lr_schedule, "patience": self.patience, "evals_per_epoch": self.evals_per_epoch,
                "plateau_patience": self.plateau_patience}

    def run_dict(self) -> dict:
        """The fields that shape one training run (part of its cache key).

        The preset's name and seed counts are left out, so ``default`` and ``full`` share a run
        whenever they ask for the same thing (the book's seed-0 runs are the results tier's).
        """
        return {k: v for k, v in asdict(self).items() if k not in ("name", "pretrain_seeds", "probe_seeds")}


SCALES: dict[str, Scale] = {
    "smoke": Scale("smoke", grid=8, tile_px=32, street_px=32, max_street_views=2, pretrain_seeds=1, probe_seeds=2,
                   model_size="tiny", pretrain_epochs=2, pretrain_val_fraction=0.15),
    "default": Scale("default", grid=16, tile_px=64, street_px=64, max_street_views=8, pretrain_seeds=1, probe_seeds=5,
                     model_size="cpu", pretrain_epochs=6),
    "full": Scale("full", grid=32, tile_px=64, street_px=64, max_street_views=8, pretrain_seeds=3, probe_seeds=5,
                  model_size="cpu", pretrain_epochs=40, lr_schedule="plateau", patience=6),
    "paper": Scale("paper", grid=32, tile_px=224, street_px=224, max_street_views=8, pretrain_seeds=3, probe_seeds=5,
                   model_size="paper", pretrain_epochs=30, lr_schedule="plateau", patience=6),
}


def get_scale(name: str | Scale | None, **overrides) -> Scale:
    """The :class:`Scale` a caller means: a preset by name, a ``Scale`` as given, None for ``default``.

    The one place a scale is resolved, so every function may take either form at its boundary.
    Fields can be overridden (``get_scale("default", grid=16)``).
    """
    if isinstance(name, Scale):
        return replace(name, **overrides) if overrides else name
    name = "default" if name is None else name
    if name not in SCALES:
        raise KeyError(f"unknown scale {name!r}; choose one of {sorted(SCALES)}")
    return replace(SCALES[name], **overrides) if overrides else SCALES[name]
