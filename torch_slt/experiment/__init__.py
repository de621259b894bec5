"""The experiment layer: training, datasets, the model zoo, initialisations, tickets and plots.

It builds on the gating core (:mod:`torch_slt.core`) and is what the command line and the benchmarks
run; the core never imports it. Optional packages (tqdm, safetensors, scikit-learn, matplotlib,
torchvision) are imported inside the functions that need them. See ``docs/architecture.md``.
"""
