"""A toy model and data set for trainer tests: y = w x + b converges in a few dozen steps, then plateaus."""

import torch


class Linear(torch.nn.Module):
    """A linear regression with a squared loss, in the trainer's protocol (``forward(batch) -> {"loss", ...}``)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, batch):
        err = self.lin(batch["x"]).squeeze(-1) - batch["y"]
        return {"loss": (err ** 2).mean(), "abs_loss": err.abs().mean()}


class Points:
    """``n`` noisy points of a fixed linear function, drawn by ``seed``."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.3 * torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}
