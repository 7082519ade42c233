"""The continuous-control update steps (functional: torch.func over the algorithm's own
tensors, Adam as tensor ops): behaviour cloning, BCQ, CQL (with the Lagrange multiplier and
Cal-QL), TD3+BC, IQL, ReBRAC, and the online SAC of the dataset maker. Each step is the maths of one
algorithm's ``_update_with_batch``, for ``core.FastUpdate`` to run eagerly or compiled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tianshou.algorithm import BCQ, CQL, TD3BC
from tianshou.algorithm.algorithm_base import Algorithm, TrainingStats
from tianshou.algorithm.imitation.bcq import BCQTrainingStats
from tianshou.algorithm.imitation.cql import CQLTrainingStats
from tianshou.algorithm.imitation.imitation_base import (
    ImitationTrainingStats,
    OfflineImitationLearning,
)
from tianshou.algorithm.modelfree.td3 import TD3TrainingStats
from torch import Tensor
from torch.func import functional_call, grad_and_value, vmap

from tianshou_offline import tianshou_adapter
from tianshou_offline.updates.core import (
    Batch,
    FunctionalAdam,
    FunctionalStep,
    LaggedParams,
    Params,
    param_aliases,
    sub_params,
    tianshou_maths,
)

# log(1 - tanh(x)^2 + eps): the epsilon Tianshou's SAC uses in its tanh correction
_TANH_EPS = float(np.finfo(np.float32).eps)
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def _critic(module: torch.nn.Module, params: Params, obs: Tensor, act: Tensor) -> Tensor:
    return functional_call(module, params, (obs, act))


def _actor(module: torch.nn.Module, params: Params, obs: Tensor) -> Tensor:
    return functional_call(module, params, (obs,))[0]


def _stack(params1: Params, params2: Params) -> Params:
    return {name: torch.stack([params1[name], params2[name]]) for name in params1}


def action_bounds(algorithm: Algorithm, device: torch.device) -> tuple[Tensor, Tensor]:
    """The action space's low and high, as tensors on ``device``."""
    space = algorithm.policy.action_space
    low = torch.as_tensor(np.asarray(space.low, np.float32), device=device)
    return low, torch.as_tensor(np.asarray(space.high, np.float32), device=device)


def tanh_gaussian_sample(
    actor: torch.nn.Module, params: Params, obs: Tensor
) -> tuple[Tensor, Tensor]:
    """SACPolicy in training: tanh of a reparameterised Gaussian sample and its log-prob."""
    (loc, scale), _ = functional_call(actor, params, (obs,))
    pre_tanh = loc + torch.randn(loc.shape, device=loc.device) * scale
    # Independent(Normal(loc, scale), 1).log_prob, as torch.distributions computes it
    log_density = -((pre_tanh - loc) ** 2) / (2 * scale**2) - scale.log() - _LOG_SQRT_2PI
    log_prob = log_density.sum(-1, keepdim=True)
    act = torch.tanh(pre_tanh)
    log_prob = log_prob - torch.log(1 - act.pow(2) + _TANH_EPS).sum(-1, keepdim=True)
    return act, log_prob


class _ActorTwinCriticStep(FunctionalStep):
    """Set-up shared by the actor + twin-critic algorithms: parameter aliases of the actor and
    both critics, their target copies, and functional Adam over the optimizers' own state.

    ``ensemble=True`` evaluates the twin critics as one batched network (``vmap`` over their
    stacked parameters: one batched matmul per layer instead of two), for the targets, the
    critic losses and the actor's Q; the maths is the same (test_fast_path.py checks both).
    """

    def __init__(self, algorithm: TD3BC | CQL, ensemble: bool = False) -> None:
        self.algo = algorithm
        self.ensemble = ensemble
        self.actor = algorithm.policy.actor
        self.actor_params = param_aliases(self.actor)
        self.critic1_params = param_aliases(algorithm.critic)
        self.critic2_params = param_aliases(algorithm.critic2)
        self.lagged = LaggedParams(algorithm)
        self.actor_optim = FunctionalAdam.of_wrapper(algorithm.policy_optim)
        self.critic1_optim = FunctionalAdam.of_wrapper(algorithm.critic_optim)
        self.critic2_optim = FunctionalAdam.of_wrapper(algorithm.critic2_optim)
        self.device = next(self.actor.parameters()).device

    def min_q(self, obs: Tensor, act: Tensor, *, target: bool) -> Tensor:
        """min(Q1, Q2)(obs, act) of the target critics, or of the current ones (as constants:
        gradients reach ``act`` only)."""
        critic1, critic2 = self.algo.critic, self.algo.critic2
        if target:
            params1, params2 = self.lagged.of(critic1), self.lagged.of(critic2)
        else:
            params1, params2 = self.critic1_params, self.critic2_params
        if not self.ensemble:
            return torch.min(
                _critic(critic1, params1, obs, act), _critic(critic2, params2, obs, act)
            )
        both = vmap(lambda params: _critic(critic1, params, obs, act))(_stack(params1, params2))
        return both.min(0).values

    def regress_critics(self, obs: Tensor, act: Tensor, returns: Tensor) -> tuple[Tensor, Tensor]:
        """One Adam step of each critic on its mean squared TD error; returns both losses."""

        def critic_loss(params: Params, module: torch.nn.Module) -> Tensor:
            return (_critic(module, params, obs, act).flatten() - returns).pow(2).mean()

        (grads1, grads2), losses = self.critic_grads(critic_loss)
        self.critic1_optim.step(list(grads1.values()))
        self.critic2_optim.step(list(grads2.values()))
        return losses  # type: ignore[return-value]

    def critic_grads(
        self, loss_fn: Callable[..., Tensor | tuple[Tensor, Tensor]], *, has_aux: bool = False
    ) -> tuple[tuple[Params, Params], tuple[object, object]]:
        """Gradients and values of ``loss_fn(params, module)`` for each critic: (grads1,
        grads2), (value1, value2), where a value is ``(loss, aux)`` with ``has_aux``."""
        critic1, critic2 = self.algo.critic, self.algo.critic2
        grad_fn = grad_and_value(loss_fn, has_aux=has_aux)
        if not self.ensemble:
            grads1, value1 = grad_fn(self.critic1_params, critic1)
            grads2, value2 = grad_fn(self.critic2_params, critic2)
            return (grads1, grads2), (value1, value2)
        # both critics have the same architecture: critic1's module runs either's parameters
        stacked = _stack(self.critic1_params, self.critic2_params)
        grads, values = vmap(lambda params: grad_fn(params, critic1))(stacked)
        split = [{name: g[i] for name, g in grads.items()} for i in (0, 1)]
        unstacked = [torch.utils._pytree.tree_map(lambda v, i=i: v[i], values) for i in (0, 1)]
        return (split[0], split[1]), (unstacked[0], unstacked[1])


class TD3BCStep(_ActorTwinCriticStep):
    """TD3+BC (Fujimoto & Gu, 2021): TD3's twin critics and delayed actor, whose loss adds a
    behaviour-cloning term. With ``tianshou_maths`` exactly Tianshou's TD3BC._update_with_batch
    and TD3's target; corrected (the default of tianshou_offline.algorithms.TD3BC), the
    smoothed target action is clipped to the action bounds, as in the paper and CORL."""

    stat_names = ("actor_loss", "critic1_loss", "critic2_loss")

    def __init__(self, algorithm: TD3BC, ensemble: bool = False) -> None:
        super().__init__(algorithm, ensemble)
        if algorithm.n_step_return_horizon != 1:
            raise NotImplementedError("fast TD3+BC supports 1-step returns only")
        # the actor loss of the last delayed update, reported in between (as Tianshou does)
        self.last_actor_loss = torch.zeros((), device=self.device)
        self.corrected = not tianshou_maths(algorithm)
        self.act_low, self.act_high = action_bounds(algorithm, self.device)

    def variant(self) -> bool:
        return tianshou_adapter.td3_update_count(self.algo) % self.algo.update_actor_freq == 0

    def advance(self) -> None:
        tianshou_adapter.advance_td3_update_count(self.algo)

    def target_action(self, obs_next: Tensor) -> Tensor:
        """The target actor's action plus clipped Gaussian noise (target policy smoothing)."""
        algo = self.algo
        act_next = _actor(self.actor, self.lagged.of(self.actor), obs_next)
        noise = torch.randn(act_next.shape, device=act_next.device) * algo.policy_noise
        if algo.noise_clip > 0.0:
            noise = noise.clamp(-algo.noise_clip, algo.noise_clip)
        act_next = act_next + noise
        if self.corrected:  # TD3 (Fujimoto et al., 2018), eq. 15: the clip to the bounds
            act_next = torch.max(torch.min(act_next, self.act_high), self.act_low)
        return act_next

    def __call__(self, batch: Batch, update_actor: object) -> Tensor:
        algo = self.algo
        obs, act, obs_next = batch["obs"], batch["act"], batch["obs_next"]

        # target: smoothed target-policy action, min of the target critics, 1-step return
        with torch.no_grad():
            act_next = self.target_action(obs_next)
            q_next = self.min_q(obs_next, act_next, target=True)
            not_terminal = 1.0 - batch["terminated"]
            returns = batch["rew"] + algo.gamma * not_terminal * q_next.flatten()

        critic1_loss, critic2_loss = self.regress_critics(obs, act, returns)

        if update_actor:  # delayed policy update with the just-updated first critic

            def actor_loss(params: Params) -> Tensor:
                act_pred = _actor(self.actor, params, obs)
                q = _critic(algo.critic, self.critic1_params, obs, act_pred)
                lmbda = algo.alpha / q.abs().mean().detach()
                return -lmbda * q.mean() + F.mse_loss(act_pred, act)

            grads, loss = grad_and_value(actor_loss)(self.actor_params)
            self.actor_optim.step(list(grads.values()))
            self.lagged.soft_update(algo.tau)
            self.last_actor_loss.copy_(loss.detach())
        return torch.stack([self.last_actor_loss, critic1_loss, critic2_loss]).detach()

    def to_stats(self, values: list[float]) -> TrainingStats:
        return TD3TrainingStats(**dict(zip(self.stat_names, values, strict=True)))


class SACStep(_ActorTwinCriticStep):
    """Online SAC (Haarnoja et al., 2018, with the automatic temperature of their follow-up),
    in the order of Tianshou's SAC._update_with_batch: both critics on the soft 1-step target,
    the actor on the updated critics, the temperature, then the soft target update.

    The target masks with ``terminated`` (a time-out is not an end: it bootstraps), as the
    paper does. Used by make_d4rl_dataset.py train, whose buffer is a ``ReplayTensors``.
    """

    stat_names = ("actor_loss", "critic1_loss", "critic2_loss", "alpha", "alpha_loss")

    def __init__(self, algorithm: Algorithm, ensemble: bool = False) -> None:
        super().__init__(algorithm, ensemble)  # type: ignore[arg-type]
        temperature = tianshou_adapter.automatic_temperature(algorithm.alpha)
        if temperature is None:
            raise NotImplementedError("the SAC step supports the automatic temperature only")
        self.log_alpha = temperature.log_alpha.detach()
        self.alpha_optim = FunctionalAdam.of(temperature.optimizer)
        self.target_entropy = temperature.target_entropy

    def __call__(self, batch: Batch, variant: object) -> Tensor:
        algo = self.algo
        obs, act = batch["obs"], batch["act"]
        alpha = self.log_alpha.exp()

        with torch.no_grad():  # soft value of the next state under the current actor
            act_next, log_pi_next = tanh_gaussian_sample(
                self.actor, self.actor_params, batch["obs_next"]
            )
            q_next = self.min_q(batch["obs_next"], act_next, target=True) - alpha * log_pi_next
            not_terminal = 1.0 - batch["terminated"]
            returns = batch["rew"] + algo.gamma * not_terminal * q_next.flatten()

        critic1_loss, critic2_loss = self.regress_critics(obs, act, returns)

        def actor_loss(params: Params) -> tuple[Tensor, Tensor]:
            act_pred, log_prob = tanh_gaussian_sample(self.actor, params, obs)
            q = self.min_q(obs, act_pred, target=False)
            return (alpha * log_prob.flatten() - q.flatten()).mean(), log_prob

        grads, (loss_actor, log_pi) = grad_and_value(actor_loss, has_aux=True)(self.actor_params)
        self.actor_optim.step(list(grads.values()))

        entropy_deficit = self.target_entropy + log_pi.detach()  # target - entropy

        def alpha_loss(log_alpha: Tensor) -> Tensor:
            return -(log_alpha * entropy_deficit).mean()

        grad, loss_alpha = grad_and_value(alpha_loss)(self.log_alpha)
        self.alpha_optim.step([grad])
        self.lagged.soft_update(algo.tau)
        stats = [loss_actor, critic1_loss, critic2_loss, alpha, loss_alpha]
        return torch.stack([s.reshape(()) for s in stats]).detach()

    def to_stats(self, values: list[float]) -> TrainingStats:
        from tianshou.algorithm.modelfree.sac import SACTrainingStats

        return SACTrainingStats(**dict(zip(self.stat_names, values, strict=True)))


def _repeat_rows(x: Tensor, repeats: int) -> Tensor:
    """Each row ``repeats`` times in a row (a static-shape repeat_interleave)."""
    return x.unsqueeze(1).expand(x.shape[0], repeats, *x.shape[1:]).reshape(-1, *x.shape[1:])


class CQLStep(_ActorTwinCriticStep):
    """CQL(H) (Kumar et al., 2020) with a SAC actor, optionally with the Lagrange multiplier and
    Cal-QL's floor (Nakamoto et al., 2023).

    Corrected (the default of tianshou_offline.algorithms.CQL), as the paper's appendix F and
    CORL's cql.py compute it: the random actions are U(low, high) of the action box; the
    log-sum-exp of each state runs over all its 3 x num_repeat_actions importance-weighted
    sampled values (random, current-policy, next-policy actions); the target masks with
    ``terminated`` (a time-out bootstraps). With ``tianshou_maths`` exactly as Tianshou 2.0.1's
    CQL._update_with_batch: U(-min_action, max_action) (a constant when min_action ==
    -max_action), the log-sum-exp over the three values of each repeated state, ``done``.
    """

    stat_names = (
        "actor_loss",
        "critic1_loss",
        "critic2_loss",
        "alpha",
        "alpha_loss",
        "cql_alpha_loss",
        "cql_alpha",
    )

    def __init__(self, algorithm: CQL, ensemble: bool = False) -> None:
        super().__init__(algorithm, ensemble)
        temperature = tianshou_adapter.automatic_temperature(algorithm.alpha)
        self.auto_alpha = temperature is not None
        if temperature is not None:
            self.log_alpha = temperature.log_alpha.detach()
            self.alpha_optim = FunctionalAdam.of(temperature.optimizer)
            self.target_entropy = temperature.target_entropy
        else:
            self.log_alpha = torch.tensor(math.log(algorithm.alpha.value), device=self.device)
        # The Lagrange multiplier. Tianshou keeps it outside state_dict (and on CUDA optimises a
        # CPU copy that the loss never reads); here it is optimised on the device, as on CPU.
        # (tianshou_offline.algorithms.CQL registers it, with its optimizer, in state_dict.)
        self.cql_log_alpha = algorithm.cql_log_alpha.detach()
        self.cql_alpha_optim = FunctionalAdam.of(algorithm.cql_alpha_optim)
        self.cql_alpha_optim.params = [self.cql_log_alpha]
        for name in ("exp_avg", "exp_avg_sq", "steps"):
            tensors = getattr(self.cql_alpha_optim, name)
            setattr(self.cql_alpha_optim, name, [t.to(self.device) for t in tensors])
        self.corrected = not tianshou_maths(algorithm)
        self.act_low, self.act_high = action_bounds(algorithm, self.device)
        space = algorithm.policy.action_space  # log-density of U(low, high), a constant
        self.box_log_density = -float(np.log(space.high - space.low).sum())

    def _sample(self, obs: Tensor, params: Params | None = None) -> tuple[Tensor, Tensor]:
        return tanh_gaussian_sample(
            self.actor, self.actor_params if params is None else params, obs
        )

    def random_actions(self, n: int, act_dim: int) -> tuple[Tensor, float]:
        """``n`` uniform random actions and the log-density they are importance-weighted with."""
        if self.corrected:  # uniform over the action box
            low, high = self.act_low, self.act_high
            log_density = self.box_log_density
        else:  # Tianshou's bounds: U(-min_action, max_action), log-density of U(-1, 1)
            low, high = -self.algo.min_action, self.algo.max_action
            log_density = math.log(0.5**act_dim)
        return low + (high - low) * torch.rand(n, act_dim, device=self.device), log_density

    def sampled_logsumexp(
        self, random_q: Tensor, current_q: Tensor, next_q: Tensor, batch_size: int
    ) -> Tensor:
        """temperature * log-sum-exp(Q / temperature) over the sampled actions: per state over
        its 3 x num_repeat_actions values (corrected), or per repeated state over its 3 values
        (Tianshou); each input is (batch_size * num_repeat_actions, 1), states repeated in a row.
        """
        if self.corrected:
            random_q, current_q, next_q = (
                v.reshape(batch_size, -1) for v in (random_q, current_q, next_q)
            )
        sampled = torch.cat([random_q, current_q, next_q], 1) / self.algo.temperature
        return torch.logsumexp(sampled, dim=1) * self.algo.temperature

    def __call__(self, batch: Batch, variant: object) -> Tensor:
        algo = self.algo
        obs, act, obs_next = batch["obs"], batch["act"], batch["obs_next"]
        batch_size, act_dim = act.shape
        repeats = algo.num_repeat_actions
        alpha = self.log_alpha.exp()

        # actor: E[alpha * log pi - min Q] with the critics before their update
        def actor_loss(params: Params) -> tuple[Tensor, Tensor]:
            act_pred, log_prob = self._sample(obs, params)
            q = self.min_q(obs, act_pred, target=False)
            return (alpha * log_prob - q).mean(), log_prob

        grads, (loss_actor, log_pi) = grad_and_value(actor_loss, has_aux=True)(self.actor_params)
        self.actor_optim.step(list(grads.values()))

        # temperature
        if self.auto_alpha:
            entropy_deficit = self.target_entropy + log_pi.detach()  # target - entropy

            def alpha_loss(log_alpha: Tensor) -> Tensor:
                return -(log_alpha * entropy_deficit).mean()

            grad, loss_alpha = grad_and_value(alpha_loss)(self.log_alpha)
            self.alpha_optim.step([grad])
            alpha = self.log_alpha.exp()
        else:
            loss_alpha = torch.zeros((), device=self.device)

        with torch.no_grad():
            # target: soft value of the next state under the updated actor
            act_next, log_pi_next = self._sample(obs_next)
            q_next = self.min_q(obs_next, act_next, target=True)
            q_next = q_next - alpha * log_pi_next
            terminal = batch["terminated"] if self.corrected else batch["done"]
            returns = batch["rew"] + (1.0 - terminal) * algo.gamma * q_next.flatten()

            # the penalty's sampled actions, shared by both critics
            random_act, random_log_prob = self.random_actions(batch_size * repeats, act_dim)
            repeated_obs = _repeat_rows(obs, repeats)
            repeated_obs_next = _repeat_rows(obs_next, repeats)
            act_cur, log_pi_cur = self._sample(repeated_obs)
            act_nxt, log_pi_nxt = self._sample(repeated_obs_next)
            if algo.calibrated:
                mc_returns = _repeat_rows(batch["calibration_returns"][:, None], repeats)

        def conservative_gap(params: Params, module: torch.nn.Module) -> tuple[Tensor, Tensor]:
            """(TD loss, unweighted penalty before the Lagrange scaling) of one critic."""
            q = _critic(module, params, obs, act).flatten()
            td_loss = F.mse_loss(q, returns)
            random_q = _critic(module, params, repeated_obs, random_act) - random_log_prob
            current_q = _critic(module, params, repeated_obs, act_cur) - log_pi_cur
            next_q = _critic(module, params, repeated_obs, act_nxt) - log_pi_nxt
            if algo.calibrated:
                random_q, current_q, next_q = (
                    torch.max(v, mc_returns) for v in (random_q, current_q, next_q)
                )
            soft_max_q = self.sampled_logsumexp(random_q, current_q, next_q, batch_size)
            penalty = soft_max_q.mean() * algo.cql_weight - q.mean() * algo.cql_weight
            return td_loss, penalty

        with torch.no_grad():  # the Lagrange scale as it was before this step's update
            if algo.with_lagrange:
                cql_alpha = torch.clamp(
                    self.cql_log_alpha.exp(), algo.alpha_min, algo.alpha_max
                ).reshape(())
            else:
                cql_alpha = torch.ones((), device=self.device)

        def critic_loss(params: Params, module: torch.nn.Module) -> tuple[Tensor, Tensor]:
            td_loss, penalty = conservative_gap(params, module)
            if algo.with_lagrange:
                penalty = penalty - algo.lagrange_threshold
                return td_loss + cql_alpha * penalty, penalty.detach()
            return td_loss + penalty, penalty.detach()

        (grads1, grads2), ((loss_c1, gap1), (loss_c2, gap2)) = self.critic_grads(
            critic_loss, has_aux=True
        )

        if algo.with_lagrange:  # dual ascent on the multiplier, with the same penalties

            def multiplier_loss(log_alpha: Tensor) -> Tensor:
                scale = torch.clamp(log_alpha.exp(), algo.alpha_min, algo.alpha_max)
                return (-(scale * gap1 + scale * gap2) * 0.5).sum()

            grad, loss_cql_alpha = grad_and_value(multiplier_loss)(self.cql_log_alpha)
            self.cql_alpha_optim.step([grad])
        else:
            loss_cql_alpha = torch.zeros((), device=self.device)

        self.critic1_optim.step(list(grads1.values()))
        self.critic2_optim.step(list(grads2.values()))
        self.lagged.soft_update(algo.tau)
        stats = [loss_actor, loss_c1, loss_c2, alpha, loss_alpha, loss_cql_alpha, cql_alpha]
        return torch.stack([s.reshape(()) for s in stats]).detach()

    def to_stats(self, values: list[float]) -> TrainingStats:
        stats = dict(zip(self.stat_names, values, strict=True))
        if not self.auto_alpha:
            stats["alpha_loss"] = None
        if not self.algo.with_lagrange:
            stats["cql_alpha_loss"] = stats["cql_alpha"] = None
        return CQLTrainingStats(**stats)


class BCQStep(FunctionalStep):
    """BCQ (Fujimoto et al., 2019): VAE, twin critics with the clipped double-Q target over
    VAE-sampled next actions, perturbation actor, targets.

    Corrected (the default of tianshou_offline.algorithms.BCQ), as in the paper's Algorithm 1:
    the target's sampled actions go through the target perturbation network, and the target
    masks with ``terminated``. With ``tianshou_maths`` exactly Tianshou 2.0.1's
    BCQ._update_with_batch: the decoded actions unperturbed, ``done``.
    """

    stat_names = ("actor_loss", "critic1_loss", "critic2_loss", "vae_loss")

    def __init__(self, algorithm: BCQ) -> None:
        self.algo = algorithm
        policy = algorithm.policy
        self.vae, self.perturbation = policy.vae, policy.actor_perturbation
        self.vae_params = param_aliases(self.vae)
        self.decoder_params = sub_params(self.vae_params, "decoder")  # the same tensors
        self.perturbation_params = param_aliases(self.perturbation)
        self.critic1_params = param_aliases(policy.critic)
        self.critic2_params = param_aliases(algorithm.critic2)
        self.lagged = LaggedParams(algorithm)
        self.vae_optim = FunctionalAdam.of_wrapper(algorithm.vae_optim)
        self.perturbation_optim = FunctionalAdam.of_wrapper(algorithm.actor_perturbation_optim)
        self.critic1_optim = FunctionalAdam.of_wrapper(algorithm.critic_optim)
        self.critic2_optim = FunctionalAdam.of_wrapper(algorithm.critic2_optim)
        self.device = next(self.vae.parameters()).device
        self.corrected = not tianshou_maths(algorithm)

    def _decode(self, obs: Tensor) -> Tensor:
        """VAE.decode(obs): a latent from N(0, 1) clipped to [-0.5, 0.5], decoded (no grad)."""
        latent = torch.randn(obs.shape[0], self.vae.latent_dim, device=obs.device)
        hidden = functional_call(
            self.vae.decoder, self.decoder_params, (torch.cat([obs, latent.clamp(-0.5, 0.5)], -1),)
        )
        return self.vae.max_action * torch.tanh(hidden)

    def __call__(self, batch: Batch, variant: object) -> Tensor:
        algo, policy = self.algo, self.algo.policy
        obs, act = batch["obs"], batch["act"]
        batch_size = obs.shape[0]

        # VAE: reconstruction + KL(N(mean, std) || N(0, 1)) / 2
        def vae_loss(params: Params) -> Tensor:
            recon, mean, std = functional_call(self.vae, params, (obs, act))
            kl = (-torch.log(std) + (std.pow(2) + mean.pow(2) - 1) / 2).mean()
            return F.mse_loss(act, recon) + kl / 2

        grads, loss_vae = grad_and_value(vae_loss)(self.vae_params)
        self.vae_optim.step(list(grads.values()))

        # target: the best of num_sampled_action VAE actions per next state, each scored by
        # lmbda * min + (1 - lmbda) * max of the target critics (the updated VAE samples them)
        with torch.no_grad():
            obs_next = _repeat_rows(batch["obs_next"], algo.num_sampled_action)
            act_next = self._decode(obs_next)
            if self.corrected:  # xi_phi'(s', a), the target perturbation network
                target_perturbation = self.lagged.of(self.perturbation)
                act_next = functional_call(
                    self.perturbation, target_perturbation, (obs_next, act_next)
                )
            q1 = _critic(policy.critic, self.lagged.of(policy.critic), obs_next, act_next)
            q2 = _critic(algo.critic2, self.lagged.of(algo.critic2), obs_next, act_next)
            q_next = algo.lmbda * torch.min(q1, q2) + (1 - algo.lmbda) * torch.max(q1, q2)
            q_next = q_next.reshape(batch_size, -1).max(dim=1)[0].reshape(-1, 1)
            terminal = batch["terminated"] if self.corrected else batch["done"]
            not_done = (1.0 - terminal).reshape(-1, 1)
            returns = batch["rew"].reshape(-1, 1) + not_done * algo.gamma * q_next

        def critic_loss(params: Params, module: torch.nn.Module) -> Tensor:
            return F.mse_loss(_critic(module, params, obs, act), returns)

        grads, loss_c1 = grad_and_value(critic_loss)(self.critic1_params, policy.critic)
        self.critic1_optim.step(list(grads.values()))
        grads, loss_c2 = grad_and_value(critic_loss)(self.critic2_params, algo.critic2)
        self.critic2_optim.step(list(grads.values()))

        # perturbation actor: maximise the (updated) first critic at perturbed VAE actions
        with torch.no_grad():
            sampled_act = self._decode(obs)

        def actor_loss(params: Params) -> Tensor:
            perturbed = functional_call(self.perturbation, params, (obs, sampled_act))
            return -_critic(policy.critic, self.critic1_params, obs, perturbed).mean()

        grads, loss_actor = grad_and_value(actor_loss)(self.perturbation_params)
        self.perturbation_optim.step(list(grads.values()))
        self.lagged.soft_update(algo.tau)
        return torch.stack([loss_actor, loss_c1, loss_c2, loss_vae]).detach()

    def to_stats(self, values: list[float]) -> TrainingStats:
        return BCQTrainingStats(**dict(zip(self.stat_names, values, strict=True)))


class BehaviourCloningStep(FunctionalStep):
    """Continuous behaviour cloning: MSE between the actor's and the dataset's actions."""

    stat_names = ("loss",)

    def __init__(self, algorithm: OfflineImitationLearning) -> None:
        if algorithm.policy.action_type != "continuous":
            raise NotImplementedError("fast behaviour cloning supports continuous actions")
        self.actor = algorithm.policy.actor
        self.actor_params = param_aliases(self.actor)
        self.optim = FunctionalAdam.of_wrapper(algorithm.optim)
        self.device = next(self.actor.parameters()).device

    def __call__(self, batch: Batch, variant: object) -> Tensor:
        def loss_fn(params: Params) -> Tensor:
            return F.mse_loss(_actor(self.actor, params, batch["obs"]), batch["act"])

        grads, loss = grad_and_value(loss_fn)(self.actor_params)
        self.optim.step(list(grads.values()))
        return loss.detach().reshape(1)

    def to_stats(self, values: list[float]) -> TrainingStats:
        return ImitationTrainingStats(loss=values[0])


# ----------------------------------------------------------------------------------------------
# IQL and ReBRAC
# ----------------------------------------------------------------------------------------------

# IQL's bounds on the Gaussian actor's log standard deviation (CORL's iql.py LOG_STD_MIN/MAX)
IQL_LOG_STD_MIN, IQL_LOG_STD_MAX = -20.0, 2.0


@dataclass(kw_only=True)
class IQLTrainingStats(TrainingStats):
    actor_loss: float
    critic1_loss: float
    critic2_loss: float
    value_loss: float
    actor_lr: float


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """IQL's value loss (Kostrikov et al., 2021, eq. 5): the mean of |tau - 1(u < 0)| u^2 over
    u = Q(s, a) - V(s). With tau > 0.5 a positive residual weighs more than a negative one, so V
    regresses towards an upper expectile of Q over the dataset's actions."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def advantage_weights(advantage: Tensor, beta: float, max_weight: float) -> Tensor:
    """IQL's (AWR's) actor weights exp(beta * A(s, a)), clipped at ``max_weight`` (100 in the
    authors' code and CORL's EXP_ADV_MAX); constants of the actor loss."""
    return torch.exp(beta * advantage.detach()).clamp(max=max_weight)


def gaussian_nll(mean: Tensor, std: Tensor, act: Tensor) -> Tensor:
    """-log N(act; mean, std) summed over the action dimensions, with IQL's bounds on the log
    standard deviation (a bound, as in CORL's clamp, stops the gradient beyond it)."""
    log_std = std.log().clamp(IQL_LOG_STD_MIN, IQL_LOG_STD_MAX)
    z = (act - mean) * torch.exp(-log_std)
    return (0.5 * z.pow(2) + log_std + _LOG_SQRT_2PI).sum(-1)


def cosine_lr_factor(step: Tensor, total_steps: int) -> Tensor:
    """The factor of the base learning rate at update ``step`` (from 0) of a cosine decay to 0
    over ``total_steps`` updates: (1 + cos(pi * step / total_steps)) / 2, 0 after the end.
    torch's CosineAnnealingLR(T_max=total_steps, eta_min=0) in closed form (CORL's iql.py), and
    optax.cosine_decay_schedule (the IQL authors' code), which stays at 0 after the end."""
    progress = torch.clamp(step / total_steps, max=1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * progress))


class IQLStep(_ActorTwinCriticStep):
    """IQL (Kostrikov et al., 2021), in the order of CORL's iql.py (ImplicitQLearning.train):

    1. V(s) on the expectile loss of min(Q1', Q2')(s, a) - V(s) (the target critics at the
       dataset's action: no action outside the data is ever evaluated);
    2. both critics on r + gamma (1 - terminated) V(s'), V before its update, then the soft
       update of the target critics;
    3. the actor on advantage-weighted regression, weights exp(beta (Q'(s, a) - V(s)))
       clipped at ``max_weight``: the Gaussian actor's negative log-likelihood of the dataset's
       action, or the deterministic actor's squared error, with the learning rate of a cosine
       decay over ``actor_lr_decay_steps`` updates.

    The schedule's position is the actor optimizer's own step count, so a checkpoint (which holds
    the optimizer's state) resumes it exactly. Rewards are multiplied by the algorithm's
    ``reward_scale`` (IQL.process_buffer).
    """

    stat_names = ("actor_loss", "critic1_loss", "critic2_loss", "value_loss", "actor_lr")

    def __init__(self, algorithm: Algorithm) -> None:
        super().__init__(algorithm)  # type: ignore[arg-type]
        self.value = algorithm.value
        self.value_params = param_aliases(self.value)
        self.value_optim = FunctionalAdam.of_wrapper(algorithm.value_optim)
        self.deterministic = algorithm.deterministic_actor
        # the actor's learning rate as a device tensor, set before each actor step from the
        # optimizer's step count (a compiled step reads it without recompiling)
        self.base_actor_lr = self.actor_optim.lr
        self.actor_lr = torch.tensor(self.base_actor_lr, device=self.device)
        self.actor_optim.lr = self.actor_lr  # type: ignore[assignment]

    def behaviour_loss(self, params: Params, obs: Tensor, act: Tensor) -> Tensor:
        """Per sample: the Gaussian actor's -log pi(a|s), or the deterministic actor's
        ||pi(s) - a||^2 (CORL's iql.py, both summed over the action dimensions)."""
        if self.deterministic:
            return (_actor(self.actor, params, obs) - act).pow(2).sum(-1)
        mean, std = _actor(self.actor, params, obs)
        return gaussian_nll(mean, std, act)

    def scheduled_actor_lr(self) -> Tensor:
        steps = self.algo.actor_lr_decay_steps
        if steps is None:
            return self.actor_lr
        factor = cosine_lr_factor(self.actor_optim.steps[0], steps)
        self.actor_lr.copy_(self.base_actor_lr * factor)
        return self.actor_lr

    def __call__(self, batch: Batch, variant: object) -> Tensor:
        algo = self.algo
        obs, act = batch["obs"], batch["act"]

        with torch.no_grad():
            next_v = functional_call(self.value, self.value_params, (batch["obs_next"],))
            target_q = self.min_q(obs, act, target=True).flatten()

        def value_loss(params: Params) -> tuple[Tensor, Tensor]:
            diff = target_q - functional_call(self.value, params, (obs,)).flatten()
            return expectile_loss(diff, algo.expectile), diff.detach()

        grads, (loss_value, advantage) = grad_and_value(value_loss, has_aux=True)(self.value_params)
        self.value_optim.step(list(grads.values()))

        not_terminal = 1.0 - batch["terminated"]
        rew = batch["rew"] * algo.reward_scale
        returns = rew + algo.gamma * not_terminal * next_v.flatten()
        critic1_loss, critic2_loss = self.regress_critics(obs, act, returns)
        self.lagged.soft_update(algo.tau)

        weights = advantage_weights(advantage, algo.beta, algo.max_weight)

        def actor_loss(params: Params) -> Tensor:
            return (weights * self.behaviour_loss(params, obs, act)).mean()

        grads, loss_actor = grad_and_value(actor_loss)(self.actor_params)
        lr = self.scheduled_actor_lr()
        self.actor_optim.step(list(grads.values()))
        stats = [loss_actor, critic1_loss, critic2_loss, loss_value, lr]
        return torch.stack([s.reshape(()) for s in stats]).detach()

    def to_stats(self, values: list[float]) -> TrainingStats:
        return IQLTrainingStats(**dict(zip(self.stat_names, values, strict=True)))


def rebrac_critic_target(
    q_next: Tensor,
    act_next: Tensor,
    act_next_data: Tensor,
    rew: Tensor,
    terminated: Tensor,
    gamma: float,
    critic_bc_coef: float,
) -> Tensor:
    """ReBRAC's TD target (Tarasov et al., 2023, eq. 3; CORL's rebrac.py update_critic):
    r + gamma (1 - terminated) (min Q'(s', a') - critic_bc_coef ||a' - a'_data||^2), where a' is
    the smoothed target-actor action and a'_data the dataset's action at s'."""
    penalty = (act_next - act_next_data).pow(2).sum(-1)
    return rew + gamma * (1.0 - terminated) * (q_next - critic_bc_coef * penalty)


def rebrac_actor_loss(
    q: Tensor, act_pred: Tensor, act: Tensor, actor_bc_coef: float, normalize_q: bool
) -> Tensor:
    """ReBRAC's actor loss (eq. 2; CORL's rebrac.py update_actor): the mean of
    actor_bc_coef ||pi(s) - a||^2 - lambda min Q(s, pi(s)), lambda = 1 / mean|min Q| (a constant)
    with ``normalize_q``, else 1."""
    bc = (act_pred - act).pow(2).sum(-1)
    lmbda = 1.0 / q.abs().mean().detach() if normalize_q else 1.0
    return (actor_bc_coef * bc - lmbda * q).mean()


class ReBRACStep(TD3BCStep):
    """ReBRAC (Tarasov et al., 2023): TD3+BC's update with ReBRAC's changes, as CORL's rebrac.py
    (update_td3): the critics' target subtracts ``critic_bc_coef`` times the squared distance of
    the smoothed next action to the dataset's next action (``act_next``, ReBRAC.process_buffer);
    the delayed actor minimises ``actor_bc_coef`` times its squared distance to the dataset's
    action minus the normalised min of both (just updated) critics; then the soft update of the
    target actor and critics. The target action is clipped to the action bounds as in TD3BCStep.
    """

    def __call__(self, batch: Batch, update_actor: object) -> Tensor:
        algo = self.algo
        obs, act, obs_next = batch["obs"], batch["act"], batch["obs_next"]

        with torch.no_grad():
            act_next = self.target_action(obs_next)
            q_next = self.min_q(obs_next, act_next, target=True).flatten()
            returns = rebrac_critic_target(
                q_next,
                act_next,
                batch["act_next"],
                batch["rew"],
                batch["terminated"],
                algo.gamma,
                algo.critic_bc_coef,
            )

        critic1_loss, critic2_loss = self.regress_critics(obs, act, returns)

        if update_actor:

            def actor_loss(params: Params) -> Tensor:
                act_pred = _actor(self.actor, params, obs)
                q = self.min_q(obs, act_pred, target=False).flatten()
                return rebrac_actor_loss(q, act_pred, act, algo.actor_bc_coef, algo.normalize_q)

            grads, loss = grad_and_value(actor_loss)(self.actor_params)
            self.actor_optim.step(list(grads.values()))
            self.lagged.soft_update(algo.tau)
            self.last_actor_loss.copy_(loss.detach())
        return torch.stack([self.last_actor_loss, critic1_loss, critic2_loss]).detach()
