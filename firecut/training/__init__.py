"""Training: one run, and the recipe every experiment shares. Nothing here prints: `fit` reports
through its hooks (`log`, `on_step`, `on_epoch`), which the command line fills with its bar.

    loop.py      `fit`: one CNN or SNN into a resumable run folder (build or convert or prune the
                 model, train, test every epoch, checkpoint, count, summarise), `evaluate_checkpoint`
    steps.py     the optimiser, the warm-up + cosine schedule, one epoch of steps
    metrics.py   evaluation: accuracy, macro F1, AC/MAC and energy (fp32, NCHW)
    device.py    device, bf16 autocast, torch.compile
    recipe.py    the shared recipe: step configs, CNN -> convert -> fine-tune, settings checks
"""
