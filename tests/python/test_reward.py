"""vecnorm.torch.RewardScaler (reward scaling by the discounted return)
against the anchors' own wrappers, installed from PyPI: Stable-Baselines3's
VecNormalize(norm_reward=True) over a DummyVecEnv of scripted environments,
and Gymnasium's NormalizeReward over a scripted environment. The same rewards
and episode ends go through both, hundreds of steps: equal scaled rewards,
returns and return statistics within rounding. Also: frozen statistics, the
state_dict, torch.compile(fullgraph=True), CUDA, and the errors.

The largest differences seen are printed (pytest -s) for the closing note."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import vecnorm.presets as presets
import vecnorm.torch as vt

CUDA = torch.cuda.is_available()


def script(steps: int, envs: int, seed: int):
    """Rewards (float32 values: what a vector env hands over) and episode ends
    (about 1 step in 20), with a few outliers that reach SB3's clip bound."""
    rng = np.random.default_rng(seed)
    r = (0.3 + rng.standard_normal((steps, envs)) * 2.0).astype(np.float32)
    r[steps // 2, 0] = 500.0
    r[steps - 3, envs - 1] = -800.0
    done = rng.random((steps, envs)) < 0.05
    return r, done


def scripted_env(gym, reward_of):
    """A gym.Env class whose step returns (reward, terminated) = reward_of(env);
    env.i is its index in a vector env."""

    class Scripted(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def __init__(self, i: int = 0):
            self.i = i

        def reset(self, *, seed=None, options=None):
            return np.zeros(1, np.float32), {}

        def step(self, action):
            reward, terminated = reward_of(self)
            return np.zeros(1, np.float32), reward, terminated, False, {}

    return Scripted


def _sb3():
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    return gym, DummyVecEnv, VecNormalize


def sb3_run(rewards, dones, gamma, eval_from=None):
    """SB3's own VecNormalize over environments that return the scripted
    rewards and terminations: its scaled rewards (float32: SB3 casts them),
    returns and ret_rms per step; from step `eval_from` on in eval mode
    (training=False: its returns hold but for the zeroing at dones)."""
    gym, DummyVecEnv, VecNormalize = _sb3()
    steps, envs = rewards.shape
    clock = {"t": 0}

    Scripted = scripted_env(gym, lambda env: (float(rewards[clock["t"], env.i]), bool(dones[clock["t"], env.i])))

    vn = VecNormalize(DummyVecEnv([lambda i=i: Scripted(i) for i in range(envs)]), norm_obs=False,
                      norm_reward=True, gamma=gamma)
    vn.reset()
    out = []
    for t in range(steps):
        clock["t"] = t
        if t == eval_from:
            vn.training = False
        _, r, _, _ = vn.step(np.zeros(envs, dtype=np.int64))
        out.append((np.asarray(r, dtype=np.float64), vn.returns.copy(), float(vn.ret_rms.mean),
                    float(vn.ret_rms.var), float(vn.ret_rms.count)))
    return out


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if CUDA else []))
def test_matches_sb3_vecnormalize(device, capsys):
    steps, envs, gamma = 300, 8, 0.99
    rewards, dones = script(steps, envs, seed=1)
    want = sb3_run(rewards, dones, gamma)
    rs = presets.sb3_reward(envs, gamma=gamma, device=device)
    worst_y = worst_r = worst_v = 0.0
    clipped = 0
    for t in range(steps):
        # float32 rewards, as SB3's vector env holds them: divided in float64, returned
        # as float32 (SB3's normalize_reward casts too).
        y = rs(torch.from_numpy(rewards[t]).to(device), done=torch.from_numpy(dones[t]).to(device))
        assert y.dtype == torch.float32
        wy, wr, wm, wv, wc = want[t]
        got = y.double().cpu().numpy()
        dy = float(np.max(np.abs(got - wy) / np.maximum(1.0, np.abs(wy))))
        # The returns: SB3's formula in SB3's order (R * gamma + r in float64).
        dr = float(np.max(np.abs(rs.returns.cpu().numpy() - wr) / np.maximum(1.0, np.abs(wr))))
        st = rs.statistics
        dv = abs(float(st.reward_var) - wv) / wv
        assert abs(float(st.reward_loc) - wm) <= 1e-12 * (abs(wm) + math.sqrt(wv)), f"step {t}: mean"
        assert st.count("reward") + 1e-4 == pytest.approx(wc, rel=1e-15)
        # y: the float32 rounding of values that agree to ~1e-15 (the batch moments
        # are summed in another order) may differ by one float32 ulp.
        assert np.array_equal(rs.returns.cpu().numpy(), wr), f"step {t}: the returns differ by {dr:.3g}"
        assert dy <= 2.0**-23 and dv <= 1e-12, f"step {t}: y {dy:.3g}, var {dv:.3g}"
        worst_y, worst_r, worst_v = max(worst_y, dy), max(worst_r, dr), max(worst_v, dv)
        clipped += int(np.sum(np.abs(wy) >= 10.0))
    assert clipped > 0, "the script never reached SB3's clip bound"
    with capsys.disabled():
        print(f"\n[reward] sb3 VecNormalize(norm_reward) {device}: {steps} steps x {envs} envs; largest difference: "
              f"scaled reward {worst_y:.2g}, returns {worst_r:.2g}, var {worst_v:.2g} (relative); {clipped} clipped")


def _reward_ranks(rank: int, store: str, tmp: str, rewards, dones, gamma: float):
    """Rank `rank` of 2 (gloo): the scaler of its own 4 environments, the
    statistics pooled over both ranks' returns; writes what it saw to `tmp`."""
    import datetime

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    cols = slice(4 * rank, 4 * rank + 4)
    rs = presets.sb3_reward(4, gamma=gamma, process_group=dist.group.WORLD)
    seen = {"y": [], "returns": [], "mean": [], "var": [], "count": []}
    for t in range(rewards.shape[0]):
        y = rs(torch.from_numpy(np.ascontiguousarray(rewards[t, cols])),
               done=torch.from_numpy(np.ascontiguousarray(dones[t, cols])))
        seen["y"].append(y.double().numpy())
        seen["returns"].append(rs.returns.numpy().copy())
        seen["mean"].append(float(rs.statistics.reward_loc))
        seen["var"].append(float(rs.statistics.reward_var))
        seen["count"].append(rs.statistics.count("reward"))
    torch.save(seen, f"{tmp}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_scale_as_one_sb3_vecnormalize_over_all_their_environments(tmp_path, capsys):
    """process_group: 2 gloo ranks of 4 environments each against SB3's
    VecNormalize over the 8: every rank's scaled rewards and returns are its
    environments' slice of SB3's, and both hold SB3's return statistics."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    steps, envs, gamma = 150, 8, 0.99
    rewards, dones = script(steps, envs, seed=4)
    want = sb3_run(rewards, dones, gamma)
    mp.start_processes(_reward_ranks, args=(str(tmp_path / "store"), str(tmp_path), rewards, dones, gamma), nprocs=2,
                       join=True, start_method="spawn")
    worst_y = worst_v = 0.0
    for rank in range(2):
        seen = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)  # numpy arrays, written above
        cols = slice(4 * rank, 4 * rank + 4)
        for t in range(steps):
            wy, wr, wm, wv, wc = want[t]
            dy = float(np.max(np.abs(seen["y"][t] - wy[cols]) / np.maximum(1.0, np.abs(wy[cols]))))
            dv = abs(seen["var"][t] - wv) / wv
            assert np.array_equal(seen["returns"][t], wr[cols]), f"rank {rank} step {t}: returns"
            assert seen["count"][t] + 1e-4 == pytest.approx(wc, rel=1e-15), f"rank {rank} step {t}: count"
            assert abs(seen["mean"][t] - wm) <= 1e-12 * (abs(wm) + math.sqrt(wv)), f"rank {rank} step {t}: mean"
            assert dy <= 2.0**-23 and dv <= 1e-12, f"rank {rank} step {t}: y {dy:.3g}, var {dv:.3g}"
            worst_y, worst_v = max(worst_y, dy), max(worst_v, dv)
    with capsys.disabled():
        print(f"\n[reward] sb3 VecNormalize over 8 envs vs 2 gloo ranks of 4: {steps} steps; largest difference: "
              f"scaled reward {worst_y:.2g}, var {worst_v:.2g} (relative); returns equal")


def test_a_frozen_sb3_scaler_holds_its_returns_as_sb3_in_eval_mode():
    """SB3's eval mode (training=False) from step 40 of 80: its returns hold,
    zeroed at dones, and its statistics stay. presets.sb3_reward frozen at the
    same step (frozen_returns="hold"): the same returns, bit for bit, and the
    same scaled rewards; a scaler whose frozen returns advance (Gymnasium's
    rule) has other returns."""
    steps, envs, gamma = 80, 6, 0.99
    rewards, dones = script(steps, envs, seed=3)
    want = sb3_run(rewards, dones, gamma, eval_from=40)
    rs = presets.sb3_reward(envs, gamma=gamma)
    assert rs.frozen_returns == "hold"
    advancing = presets.sb3_reward(envs, gamma=gamma, frozen_returns="advance")
    zeroed = 0
    for t in range(steps):
        if t == 40:
            rs.freeze()
            advancing.freeze()
        r, d = torch.from_numpy(rewards[t]), torch.from_numpy(dones[t])
        y = rs(r, done=d)
        advancing(r, done=d)
        wy, wr, wm, wv, wc = want[t]
        assert np.array_equal(rs.returns.numpy(), wr), f"step {t}: returns"
        got = y.double().numpy()
        assert float(np.max(np.abs(got - wy) / np.maximum(1.0, np.abs(wy)))) <= 2.0**-23, f"step {t}: y"
        assert rs.statistics.count("reward") + 1e-4 == pytest.approx(wc, rel=1e-15)
        if t >= 40:
            zeroed += int(np.sum(dones[t]))
    assert zeroed > 0, "the script had dones in eval mode"
    assert not np.array_equal(advancing.returns.numpy(), want[-1][1])
    with pytest.raises(ValueError, match="frozen_returns: expected 'advance' or 'hold'"):
        presets.sb3_reward(2, frozen_returns="stop")


def test_a_fresh_frozen_scaler_divides_as_a_fresh_sb3_in_eval_mode():
    """Before any update (count 0, SB3's count 1e-4): the prior's scale,
    sqrt(1 + 1e-8), against SB3's own normalize_reward of a fresh VecNormalize."""
    gym, DummyVecEnv, VecNormalize = _sb3()

    Still = scripted_env(gym, lambda env: (0.0, False))

    vn = VecNormalize(DummyVecEnv([Still] * 4), norm_obs=False, norm_reward=True, training=False)
    r = np.array([0.5, -3.0, 20.0, 1e-3], dtype=np.float32)
    rs = presets.sb3_reward(4).freeze()
    y = rs(torch.from_numpy(r))
    np.testing.assert_array_equal(y.numpy(), vn.normalize_reward(r))
    assert rs.statistics.count("reward") == 0


def gymnasium_run(rewards, terminated, gamma):
    """Gymnasium's own NormalizeReward over one scripted environment."""
    gym = pytest.importorskip("gymnasium")
    from gymnasium.wrappers import NormalizeReward
    clock = {"t": 0}

    Scripted = scripted_env(gym, lambda env: (float(rewards[clock["t"]]), bool(terminated[clock["t"]])))

    env = NormalizeReward(Scripted(), gamma=gamma)
    env.reset()
    out = []
    for t in range(len(rewards)):
        clock["t"] = t
        _, r, _, _, _ = env.step(0)
        out.append((float(np.asarray(r).reshape(-1)[0]), float(env.discounted_reward[0]), float(env.return_rms.var)))
    return out


def test_matches_gymnasium_normalize_reward(capsys):
    steps, gamma = 400, 0.95
    rewards, dones = script(steps, 1, seed=2)
    want = gymnasium_run(rewards[:, 0], dones[:, 0], gamma)
    rs = presets.gymnasium_reward(1, gamma=gamma)
    assert rs.reset_rule == "before" and rs.statistics.clip == math.inf
    worst = 0.0
    for t in range(steps):
        y = rs(torch.from_numpy(rewards[t]).double(), done=torch.from_numpy(dones[t]))
        wy, wr, wv = want[t]
        d = abs(float(y[0]) - wy) / max(1.0, abs(wy))
        assert d <= 1e-12, f"step {t}: {float(y[0])} vs {wy}"
        assert float(rs.returns[0]) == wr, f"step {t}: the return"
        assert float(rs.statistics.reward_var) == pytest.approx(wv, rel=1e-12)
        worst = max(worst, d)
    with capsys.disabled():
        print(f"\n[reward] gymnasium NormalizeReward: {steps} steps; largest difference: scaled reward {worst:.2g}")


def gymnasium_vector_run(rewards, terminated, truncated, gamma, mode="NEXT_STEP"):
    """Gymnasium's own vector NormalizeReward over a stub VectorEnv in the
    autoreset mode `mode` (NEXT_STEP, the default: the step after a done is the
    autoreset step, reward 0, no end; SAME_STEP: the done step resets) whose
    step returns the scripted rewards and episode ends. Its scaled rewards,
    accumulated rewards (float32) and return_rms."""
    gym = pytest.importorskip("gymnasium")
    from gymnasium.vector import AutoresetMode, VectorEnv
    from gymnasium.vector.utils import batch_space
    from gymnasium.wrappers.vector import NormalizeReward
    steps, envs = rewards.shape
    clock = {"t": 0}

    class Scripted(VectorEnv):
        def __init__(self):
            self.num_envs = envs
            self.metadata = {"autoreset_mode": getattr(AutoresetMode, mode)}
            self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
            self.observation_space = batch_space(self.single_observation_space, envs)
            self.single_action_space = gym.spaces.Discrete(2)
            self.action_space = batch_space(self.single_action_space, envs)

        def reset(self, *, seed=None, options=None):
            return np.zeros((envs, 1), np.float32), {}

        def step(self, actions):
            t = clock["t"]
            return (np.zeros((envs, 1), np.float32), rewards[t].astype(np.float64), terminated[t].copy(),
                    truncated[t].copy(), {})

    wrapper = NormalizeReward(Scripted(), gamma=gamma)
    wrapper.reset()
    out = []
    for t in range(steps):
        clock["t"] = t
        _, r, _, _, _ = wrapper.step(np.zeros(envs, dtype=np.int64))
        out.append((np.asarray(r, np.float64), wrapper.accumulated_reward.astype(np.float64),
                    float(wrapper.return_rms.var), float(wrapper.return_rms.count)))
    return out


def test_matches_gymnasium_vector_normalize_reward_with_autoreset_steps(capsys):
    """Gymnasium's vector wrapper leaves the autoreset step after a done out:
    its return holds and stays out of the statistics. The scaler does that for
    the rows its mask leaves out: mask = ~(previous terminated | truncated),
    done = terminated (reset "before"). float32 returns, as Gymnasium keeps
    them (its float64 sum of float32 values rounded once, as float32 adds)."""
    steps, envs, gamma = 300, 8, 0.99
    rng = np.random.default_rng(6)
    rewards = (0.3 + 2.0 * rng.standard_normal((steps, envs))).astype(np.float32)
    terminated = rng.random((steps, envs)) < 0.04
    truncated = ~terminated & (rng.random((steps, envs)) < 0.02)
    prev = np.zeros(envs, dtype=bool)
    for t in range(steps):  # the autoreset step: reward 0, no end
        rewards[t, prev] = 0.0
        terminated[t, prev] = truncated[t, prev] = False
        prev = terminated[t] | truncated[t]
    want = gymnasium_vector_run(rewards, terminated, truncated, gamma)
    rs = presets.gymnasium_reward(envs, gamma=gamma, stats_dtype=torch.float32)
    prev = torch.zeros(envs, dtype=torch.bool)
    worst_y = worst_v = 0.0
    held = 0
    for t in range(steps):
        active = ~prev
        held += int((~active).sum())
        y = rs(torch.from_numpy(rewards[t]), done=torch.from_numpy(terminated[t]), mask=active)
        prev = torch.from_numpy(terminated[t] | truncated[t])
        wy, wr, wv, wc = want[t]
        assert np.array_equal(rs.returns.double().numpy(), wr), f"step {t}: the returns"
        assert rs.statistics.count("reward") + 1e-4 == pytest.approx(wc, rel=1e-12), f"step {t}: count"
        dy = float(np.max(np.abs(y.double().numpy() - wy) / np.maximum(1.0, np.abs(wy))))
        dv = abs(float(rs.statistics.reward_var) - wv) / wv
        assert dy <= 1e-5 and dv <= 1e-5, f"step {t}: y {dy:.3g}, var {dv:.3g}"
        worst_y, worst_v = max(worst_y, dy), max(worst_v, dv)
    assert held > 0
    with capsys.disabled():
        print(f"\n[reward] gymnasium vector NormalizeReward (NEXT_STEP autoreset): {steps} steps x {envs} envs, "
              f"{held} autoreset rows held; largest difference: scaled reward {worst_y:.2g}, var {worst_v:.2g} "
              f"(relative; float32 statistics); returns equal")


def test_matches_gymnasium_vector_normalize_reward_in_same_step_autoreset_mode(capsys):
    """Gymnasium's SAME_STEP autoreset mode: every row is active; the return is
    R = gamma R (1 - terminated) + r, then zeroed where terminated | truncated.
    The scaler's "before" reset with done = terminated | previous (terminated |
    truncated) and no mask gives the same R at every step (the statistics and
    the scaled rewards); the returns it holds differ only in the rows that
    ended at this step (Gymnasium's are 0 already, the scaler's are zeroed by
    the next step's reset, before they are used)."""
    steps, envs, gamma = 300, 8, 0.99
    rng = np.random.default_rng(16)
    rewards = (0.3 + 2.0 * rng.standard_normal((steps, envs))).astype(np.float32)
    terminated = rng.random((steps, envs)) < 0.04
    truncated = ~terminated & (rng.random((steps, envs)) < 0.03)
    want = gymnasium_vector_run(rewards, terminated, truncated, gamma, mode="SAME_STEP")
    rs = presets.gymnasium_reward(envs, gamma=gamma, stats_dtype=torch.float32)
    prev = torch.zeros(envs, dtype=torch.bool)
    worst_y = worst_v = 0.0
    for t in range(steps):
        done = torch.from_numpy(terminated[t])
        y = rs(torch.from_numpy(rewards[t]), done=done | prev)
        prev = torch.from_numpy(terminated[t] | truncated[t])
        wy, wr, wv, wc = want[t]
        ours = np.where(prev.numpy(), 0.0, rs.returns.double().numpy())
        assert np.array_equal(ours, wr), f"step {t}: the returns"
        assert rs.statistics.count("reward") + 1e-4 == pytest.approx(wc, rel=1e-12), f"step {t}: count"
        dy = float(np.max(np.abs(y.double().numpy() - wy) / np.maximum(1.0, np.abs(wy))))
        dv = abs(float(rs.statistics.reward_var) - wv) / wv
        assert dy <= 1e-5 and dv <= 1e-5, f"step {t}: y {dy:.3g}, var {dv:.3g}"
        worst_y, worst_v = max(worst_y, dy), max(worst_v, dv)
    assert int(truncated.sum()) > 0 and int(terminated.sum()) > 0
    with capsys.disabled():
        print(f"\n[reward] gymnasium vector NormalizeReward (SAME_STEP autoreset): {steps} steps x {envs} envs, "
              f"{int(terminated.sum())} terminated, {int(truncated.sum())} truncated; largest difference: scaled "
              f"reward {worst_y:.2g}, var {worst_v:.2g} (relative; float32 statistics); returns equal")


def test_frozen_state_dict_and_compile_follow_the_eager_module():
    envs = 6
    rewards, dones = script(40, envs, seed=3)
    a = vt.RewardScaler((envs,), gamma=0.9)
    for t in range(20):
        a(torch.from_numpy(rewards[t]), torch.from_numpy(dones[t]))
    # A state_dict holds the returns and the statistics; a fresh module loads it.
    sd = a.state_dict()
    assert {"returns", "statistics.reward_loc", "statistics.reward_var", "statistics.reward_count"} <= set(sd)
    b = vt.RewardScaler((envs,), gamma=0.9)
    b.load_state_dict(sd)
    compiled = torch.compile(b, fullgraph=True)
    for t in range(20, 30):
        r, d = torch.from_numpy(rewards[t]), torch.from_numpy(dones[t])
        torch.testing.assert_close(compiled(r, d), a(r, d), rtol=0, atol=0)
        torch.testing.assert_close(b.returns, a.returns, rtol=0, atol=0)
    # Frozen: the statistics stay, the returns advance.
    a.freeze()
    count, var = a.statistics.count("reward"), a.statistics.reward_var.clone()
    before = a.returns.clone()
    a(torch.ones(envs), torch.zeros(envs, dtype=torch.bool))
    assert a.statistics.count("reward") == count and torch.equal(a.statistics.reward_var, var)
    torch.testing.assert_close(a.returns, before * 0.9 + 1.0, rtol=0, atol=0)
    a.reset()
    assert torch.equal(a.returns, torch.zeros(envs, dtype=torch.float64))
    # float32 rewards: computed in the statistics' float64, returned as float32.
    y32 = a(torch.ones(envs))
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32, (1.0 / torch.sqrt(a.statistics.reward_var + 1e-8)).float().expand(envs))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="reset: expected 'after', 'before' or 'never', got 'sometimes'"):
        vt.RewardScaler((2,), reset="sometimes")
    with pytest.raises(TypeError, match="center is not an option here"):
        vt.RewardScaler((2,), center=True)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        with pytest.raises(ValueError, match="process_group: torch.distributed is not initialized"):
            vt.RewardScaler((2,), process_group=object())
    with pytest.raises(ValueError, match="gamma: expected 0 <= gamma <= 1, got 1.5"):
        vt.RewardScaler((2,), gamma=1.5)
    rs = vt.RewardScaler((3,))
    with pytest.raises(ValueError, match="key 'reward'"):
        rs(torch.zeros(4))
    with pytest.raises(Exception, match="key 'reward': done dtype: expected uint8, got float32"):
        rs(torch.zeros(3), done=torch.zeros(3))
    assert torch.equal(rs.returns, torch.zeros(3, dtype=torch.float64)) and rs.statistics.count("reward") == 0
