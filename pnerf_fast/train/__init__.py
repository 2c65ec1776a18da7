"""Meta and joint pretraining, finetuning, checkpoints."""
