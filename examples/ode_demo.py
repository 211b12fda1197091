"""Learn the spiral dynamics dy/dt = (y**3) A with a Neural ODE and a plain training loop.

The same task as torchdiffeq's `examples/ode_demo.py`, written against odenet: the port
is the import line (`from odenet import odeint, odeint_adjoint`).

    python examples/ode_demo.py            # 2000 iterations, prints the loss every 100
    python examples/ode_demo.py --quick    # a few seconds: 30 iterations on 200 points
    python examples/ode_demo.py --adjoint --viz spiral.png

The script prints the test loss (mean absolute error over the whole trajectory) before
and after training; with `--quick` it checks that training reduced it.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import odenet

TRUE_A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])


class Lambda(nn.Module):
    """The true field of the spiral: y' = y³ A."""

    def forward(self, t, y):
        return torch.mm(y**3, TRUE_A)


class ODEFunc(nn.Module):
    """The learned field, an MLP on y³ (as in torchdiffeq's demo)."""

    def __init__(self, hidden: int = 50):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        for m in self.net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0, std=0.1)
                nn.init.constant_(m.bias, val=0)

    def forward(self, t, y):
        return self.net(y**3)


def get_batch(true_y, t, batch_time: int, batch_size: int):
    """Random windows of the true trajectory: initial states, times, targets."""
    n = true_y.shape[0]
    s = torch.randint(0, n - batch_time, (batch_size,))
    batch_y0 = true_y[s]  # [M, 1, 2]
    batch_t = t[:batch_time]  # [T]
    batch_y = torch.stack([true_y[s + i] for i in range(batch_time)], dim=0)  # [T, M, 1, 2]
    return batch_y0, batch_t, batch_y


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    p.add_argument("--niters", type=int, default=2000)
    p.add_argument("--data-size", type=int, default=1000)
    p.add_argument("--batch-time", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--method", default="dopri5")
    p.add_argument("--adjoint", action="store_true", help="use odeint_adjoint")
    p.add_argument("--viz", metavar="PNG", help="save the true and learned phase portraits")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.niters, args.data_size = 30, 200
    torch.manual_seed(args.seed)
    odeint = odenet.odeint_adjoint if args.adjoint else odenet.odeint

    true_y0 = torch.tensor([[2.0, 0.0]])
    t = torch.linspace(0.0, 25.0, args.data_size)
    with torch.no_grad():
        true_y = odeint(Lambda(), true_y0, t, method="dopri5")

    func = ODEFunc()
    optimizer = torch.optim.RMSprop(func.parameters(), lr=1e-3)

    def test_loss() -> float:
        with torch.no_grad():
            return float(torch.mean(torch.abs(odeint(func, true_y0, t) - true_y)))

    start_loss = test_loss()
    print(f"iter 0 | test loss {start_loss:.4f}")
    t0 = time.perf_counter()
    for itr in range(1, args.niters + 1):
        optimizer.zero_grad()
        batch_y0, batch_t, batch_y = get_batch(true_y, t, args.batch_time, args.batch_size)
        pred_y = odeint(func, batch_y0, batch_t, method=args.method)
        loss = torch.mean(torch.abs(pred_y - batch_y))
        loss.backward()
        optimizer.step()
        if itr % 100 == 0:
            print(f"iter {itr} | test loss {test_loss():.4f}")
    final = test_loss()
    print(f"final test loss {final:.4f} (from {start_loss:.4f}) after {args.niters} "
          f"iterations in {time.perf_counter() - t0:.1f} s")  # fmt: skip

    if args.viz:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with torch.no_grad():
            pred = odeint(func, true_y0, t)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(true_y[:, 0, 0], true_y[:, 0, 1], "g-", label="true")
        ax.plot(pred[:, 0, 0], pred[:, 0, 1], "b--", label="learned")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.legend()
        fig.savefig(args.viz, dpi=120, bbox_inches="tight")
        print(f"saved {args.viz}")
    if args.quick and not final < start_loss:
        raise SystemExit(f"training did not reduce the test loss ({start_loss} -> {final})")
    return final


if __name__ == "__main__":
    main()
