"""Variational policy gradient (rl/) against Stable-Baselines3 (issue #5).

Modules: :mod:`~benchmarks.rl.suites` (what runs), :mod:`~benchmarks.rl.runners` (one cell, ours or
SB3), :mod:`~benchmarks.rl.reports` (tables and figures), :mod:`~benchmarks.rl.throughput`,
:mod:`~benchmarks.rl.update_cost`, :mod:`~benchmarks.rl.step_floor`; the command line is
:mod:`benchmarks.rl.__main__`.

One command runs a named suite and writes under ``--out``::

    OUT/runs/<suite>/<env>/<label>/seed<k>/   progress.csv (ours: rl.trainer's; SB3: its csv
                                              logger), evals.csv, result.json, config.json
    OUT/summary.csv, OUT/summary.md           one row per (suite, env, label), every hyperparameter
    OUT/<suite>-<env>.png                     deterministic-eval return vs env steps, mean ± std
    OUT/throughput.csv, OUT/throughput.md     (suite ``throughput``)
    OUT/update-cost.csv, OUT/update-cost.md   (suite ``update-cost``: PPO against V-PPO,
                                              phase by phase, in one process)
    OUT/step-floor.csv, OUT/step-floor.md     (suite ``step-floor``: each one's minibatch step
                                              against the same math written out by hand)
    RESULTS/table.md, table.csv, curves.png   (suite ``autoalpha``; ``--results``, default OUT)

Usage::

    python -m benchmarks.rl --suite all --quick --out /tmp/bench/rl-quick
    python -m benchmarks.rl --suite pendulum --out /tmp/bench/rl
    python -m benchmarks.rl --suite throughput --out /tmp/bench/rl
    python -m benchmarks.rl --suite autoalpha --out /tmp/bench/rl-autoalpha \
        --results benchmarks/results/rl-autoalpha

Suites: exploration, explore, pendulum, cartpole, mujoco, ablation, autoalpha, throughput,
update-cost, step-floor, all (everything but explore, autoalpha, throughput, update-cost and
step-floor). ``explore`` is
issue 14's exploration suite (:func:`~benchmarks.rl.suites.explore`): DeepSea 10/20/30
(rl.explore_envs, bsuite's 10k episodes), sparse-reward MountainCarContinuous (100k), Acrobot-v1
(200k), Swimmer-v5 (1M, only with ``mujoco``) for V-PPO / V-TRPO (auto α, gaussian and low-rank
posteriors), PPO, RPO, SVPG and SB3 PPO (defaults; zoo settings without and with gSDE); methods
that cannot apply to a task (RPO and gSDE on discrete actions, zoo settings where the zoo has none)
appear as "n/a" rows. Its extra outputs are ``OUT/explore-aggregate.{md,csv}``: per method, the IQM
of the final return normalised per task, with a 95% stratified-bootstrap CI
(:mod:`~benchmarks.rl.stats`); every summary row also carries the per-task IQM and CI of the final
eval returns. ``autoalpha`` is issue 14's auto-α check (:mod:`~benchmarks.rl.autoalpha`): V-PPO
with the default ``alpha_schedule="auto"`` on Pendulum from α₀ = 1e-2 and 1e-6 against PPO, 3
seeds, plus V-PPO low-rank and V-TRPO from 1e-2. :mod:`~benchmarks.rl.probe` is one exploratory run
with its α / σ̄ trace. ``--quick`` shrinks steps and seeds: ``--suite all --quick`` took 3 min 10 s
and ``--suite throughput`` 1 min on one core. ``--seeds N`` runs seeds 0 … N−1 of every task;
``--only a,b`` runs only the methods (labels) and environments named (labels alone: on every
environment; environments alone: all their methods; both: the named methods on the named
environments), e.g. two processes on two cores, then one plain rerun, which finds every cell
cached, writes the tables and figures. The full sizes are the issue's. Measured wall time, one
process per core on a 2-core machine: exploration 26 min (most of it the SB3 zoo runs at ≈ 550
steps/s), pendulum 16 min, cartpole 9 min, ablation 53 min, mujoco 1 h 45 min (SB3 43 min + ours 60
min; only with ``mujoco`` installed, skipped with a message otherwise), throughput 1 min, autoalpha
33 min (18 runs, one process on a machine shared with other jobs).

Runs are resumable: a cell (suite, env, label, seed) with a ``result.json`` is skipped; a cell
without one is started again from scratch.

Fairness: both sides use 64-64 tanh actor and critic networks (MuJoCo: the zoo's 256-256 ReLU,
observation normalisation and reward scaling on both sides), the same n_envs and steps per update
within a suite (stated in the table), the same seeds, and the same evaluation: every
``eval_every`` env steps, N episodes (episode i reset with seed 12345 + i) acting with the mode of
π — for the variational methods at the posterior-mean θ ("eval") and with θ ~ q drawn per episode
("eval θ~q"). SB3 is used through its public API (a callback runs the evaluation). Differences
that remain are listed in each row's ``hyperparameters`` (e.g. SB3 zoo settings use gSDE, which rl/
does not have; SB3 fits V jointly with the policy, rl/ in separate epochs).

Each process runs with ``torch.set_num_threads(1)``; run one benchmark process at a time.
"""
