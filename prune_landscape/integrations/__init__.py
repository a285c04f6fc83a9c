"""Adapters to the frameworks: Lightning callbacks, the LightningModule, datamodules, loggers (W&B), the Hydra CLI.

The only tier allowed to import lightning, pytorch_lightning, hydra, omegaconf or wandb: it calls the
experiments and the core, never the other way round (``tests/test_architecture.py`` derives the tier from
this folder). Nothing is imported here, so the CLI's argument checks stay light.
"""
