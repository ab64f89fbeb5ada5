"""Shared fixtures of the steering tests: one torch thread (2-core CI machines)."""

import torch

torch.set_num_threads(1)
