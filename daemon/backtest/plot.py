"""The back-test's picture: prices, the allocation by class, and the budget, as one PNG.

Prices share one axis in $/MWh so they can be compared where the decision is made: the power
price against the break-even of the site's best and worst miners (``hashprice / (24 * J/TH)``)
and against what a GPU node earns per MWh at full caps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .replay import BacktestResult
from .site import BacktestSite, spec_for


def plot_backtest(result: BacktestResult, site: BacktestSite, path: Path,
                  optimum_watts: Sequence[float] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: a site controller has no display
    import matplotlib.pyplot as plt

    records = result.records
    times = [r.at for r in records]
    j_per_th = [spec_for(g.model).curve.joules_per_th for g in site.miners]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, height_ratios=(1, 1.2))
    top.plot(times, [r.power_usd_per_mwh for r in records], lw=0.8, color="black", label="power price")
    if j_per_th:
        for label, jt in (("best miner break-even", min(j_per_th)), ("worst miner break-even", max(j_per_th))):
            top.plot(times, [r.hashprice_usd_per_ph_day / (24 * jt) * 1000 for r in records], lw=1.0, label=label)
    if site.gpu_nodes and any(r.gpu_rate_usd_per_gpu_hour for r in records):
        g = site.gpu_nodes[0]
        node_mw = (g.host_max_watts + g.gpus * g.cap_max_w) / 1e6
        top.plot(times, [(r.gpu_rate_usd_per_gpu_hour or 0.0) * g.gpus / node_mw for r in records], lw=1.0,
                 label=f"GPU node value ({g.gpu_model}, full caps)")
    top.set_ylabel("$/MWh")
    top.set_yscale("symlog", linthresh=100)  # spikes to $5,000 without flattening the rest
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"{result.policy} on {site.name}: {Path(result.trace).name}")
    miners_kw = [r.miner_watts / 1000 for r in records]
    gpus_kw = [r.gpu_watts / 1000 for r in records]
    bottom.stackplot(times, miners_kw, gpus_kw, labels=["miners", "GPU nodes"], step="post", alpha=0.8)
    bottom.step(times, [r.budget_watts / 1000 for r in records], where="post", color="red", lw=1.2, label="budget")
    if optimum_watts is not None:
        bottom.step(times, [w / 1000 for w in optimum_watts], where="post", color="black", lw=0.7, ls="--",
                    label="hindsight optimum (total)")
    bottom.set_ylabel("kW")
    bottom.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
