"""Pruning: structured (channels, attention heads, FFN neurons) and sparsity patterns.

``prune(module, cfg, example_inputs)`` dispatches on ``cfg.method``:

* ``l1`` / ``l2`` -- structured pruning that physically shrinks the weights.
  - CNNs and MLPs: channel pruning with torch-pruning's DepGraph (``BasePruner``
    + ``MagnitudeImportance(p=1|2)``), ``pruning_ratio=cfg.ratio`` per layer,
    ``round_to=cfg.round_to``.  Residual-coupled channels are pruned together.
    The layer(s) producing the model's output are never pruned on their output
    side (so the number of classes / embedding width is unchanged).
  - Transformers (any submodule with a ``num_heads`` attribute): the lowest-norm
    attention heads and FFN neurons are removed (see `prune_transformer`); the
    residual stream width is left alone.  Models that set ``planner_prune_scope =
    "ffn"`` (transformers decoders, see planner.llm.hf) lose FFN neurons only.
* ``heads`` -- the transformer path with L1 norms, forced.
* ``magnitude`` -- unstructured: the smallest ``|w|`` of every Conv/Linear weight are
  zeroed (per layer, to ``cfg.ratio``).  Storage stays dense, so this only helps
  compressed size, not speed ("size-only").
* ``2:4`` -- semi-structured: in every group of 4 consecutive weights along the
  input (reduction) dimension the 2 smallest are zeroed.  Storage stays dense;
  sparse tensor-core kernels (cuSPARSELt / TensorRT sparsity) can exploit it.
  Layers whose flattened input size is not a multiple of 4 are left alone.
  ``cfg.ratio`` is ignored.

The unstructured/semi-structured methods also leave the output layer alone, like
the structured ones.  What was done is recorded on the module (see `prune_info`).

Module-level imports are light on purpose: this module is imported by the
planner process for capability lookups; torch and torch_pruning are imported
inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from planner.errors import CandidateFailed, ConfigError, FailReason, did_you_mean
from planner.schemes import PRUNE_METHODS, PRUNE_NORMS, STRUCTURED_PRUNE_METHODS

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from planner.config import PruneConfig

METHODS: tuple[str, ...] = PRUNE_METHODS
STRUCTURED: tuple[str, ...] = STRUCTURED_PRUNE_METHODS  # change the architecture (params drop)
SIZE_ONLY: tuple[str, ...] = ("magnitude", "2:4")  # zeros in dense storage

# Transformer naming (the zoo's bert-mini: encoder.layers[i].attn.{q,k,v,o},
# encoder.layers[i].ffn.{fc1,fc2}); override through `prune_transformer`'s arguments.
ATTN_PROJ: tuple[str, str, str, str] = ("q", "k", "v", "o")
FFN_PROJ: tuple[str, str] = ("fc1", "fc2")
# FFN layouts: (Linear children producing the hidden neurons, Linear child consuming them).
# planner's zoo (fc1 -> fc2), Llama-style gated MLPs (down(act(gate(x)) * up(x))) and GPT-2
# (c_fc -> c_proj, once planner.llm.hf has turned its Conv1D layers into nn.Linear).
FFN_LAYOUTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("fc1",), "fc2"), (("gate_proj", "up_proj"), "down_proj"), (("c_fc",), "c_proj"))
# A model may set this attribute to "ffn": its attention cannot be restructured (e.g. transformers
# models reshape by their config's head counts), so structured pruning removes FFN neurons only.
SCOPE_ATTR = "planner_prune_scope"
HEADS_ATTR = "num_heads"
HEAD_DIM_ATTR = "head_dim"
# Integer attributes of an attention module that equal num_heads * head_dim and are
# updated along with num_heads when present.
_INNER_ATTRS = ("all_head_size", "inner_dim", "attn_dim")

INFO_ATTR = "planner_prune_info"


def param_count(module: "nn.Module") -> int:
    """Number of parameter elements (each shared parameter counted once)."""
    return sum(p.numel() for p in module.parameters())


def prune_info(module: "nn.Module") -> dict[str, Any] | None:
    """What `prune` did to ``module`` (None when it was not pruned)."""
    return getattr(module, INFO_ATTR, None)


def validate(cfg: "PruneConfig") -> None:
    """ConfigError with every problem in ``cfg``."""
    errors = []
    if cfg.method not in METHODS:
        errors.append(f"prune.method {cfg.method!r}: {did_you_mean(cfg.method, METHODS)}")
    if not (0.0 <= float(cfg.ratio) < 1.0):
        errors.append(f"prune.ratio {cfg.ratio!r}: must be in [0, 1)")
    if int(cfg.round_to) < 1:
        errors.append(f"prune.round_to {cfg.round_to!r}: must be an integer >= 1")
    if errors:
        raise ConfigError(errors)


def prune(module: "nn.Module", cfg: "PruneConfig", example_inputs: "tuple[torch.Tensor, ...]") -> "nn.Module":
    """Prune ``module`` according to ``cfg``; may modify it in place, returns the pruned model."""
    validate(cfg)
    if not cfg.active:
        return module
    if not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    before = param_count(module)
    info: dict[str, Any] = {"method": cfg.method, "ratio": float(cfg.ratio), "round_to": int(cfg.round_to),
                            "params_before": before}
    if cfg.method in STRUCTURED:
        p = PRUNE_NORMS[cfg.method]
        if getattr(module, SCOPE_ATTR, None) == "ffn":  # the model's attention cannot be restructured
            info.update(prune_transformer(module, cfg.ratio, p=p, round_to=cfg.round_to, prune_heads=False))
            info["kind"] = "ffn"
        elif cfg.method == "heads" or is_transformer(module):
            info.update(prune_transformer(module, cfg.ratio, p=p, round_to=cfg.round_to))
            info["kind"] = "heads+ffn"
        else:
            module = _prune_channels(module, cfg.ratio, p, cfg.round_to, example_inputs)
            info["kind"] = "channels"
        info["size_only"] = False
        _check_runs(module, example_inputs, cfg.method)
    elif cfg.method == "magnitude":
        info.update(_magnitude(module, cfg.ratio, example_inputs))
        info["kind"], info["size_only"] = "unstructured", True
    elif cfg.method == "2:4":
        info.update(_two_four(module, example_inputs))
        info["kind"], info["size_only"] = "2:4", True
    info["params_after"] = param_count(module)
    setattr(module, INFO_ATTR, info)
    return module


def unusable_methods(module: "nn.Module", methods, example_inputs, ratio: float = 0.5) -> dict[str, str]:
    """The structured methods among ``methods`` that cannot apply to ``module``'s structure, each with why: a
    study tries each once when it prepares (issue 28) instead of failing one trial after another.  Channel
    pruning (``l1``/``l2`` on a model `is_transformer` does not recognise) is refused on a model with attention
    (``nn.MultiheadAttention`` or a module with an int ``num_attention_heads``, e.g. Hugging Face ViT): its
    heads are not channels.  Every other structured method is applied to a copy at ``ratio`` and the copy run."""
    import copy

    import torch.nn as nn

    from planner.config import PruneConfig

    out: dict[str, str] = {}
    attention = next((name or "<root>" for name, m in module.named_modules()
                      if isinstance(m, nn.MultiheadAttention) or isinstance(getattr(m, "num_attention_heads", None), int)), None)
    for method in methods:
        if method not in STRUCTURED:
            continue
        channels = method != "heads" and getattr(module, SCOPE_ATTR, None) != "ffn" and not is_transformer(module)
        if channels and attention is not None:
            out[method] = (f"{method} would prune channels of a model with attention (module {attention!r}): channel "
                           f"pruning cuts across its heads; head pruning needs attention modules with an int "
                           f"{HEADS_ATTR!r} attribute")
            continue
        try:
            prune(copy.deepcopy(module), PruneConfig(method=method, ratio=float(ratio), round_to=1), example_inputs)
        except CandidateFailed as e:
            out[method] = e.message
        except Exception as e:  # noqa: BLE001 -- any failure: the method does not apply to this model
            out[method] = f"{type(e).__name__}: {str(e)[:300]}"
    return out


# --------------------------------------------------------------------------- helpers


def is_transformer(module: "nn.Module", heads_attr: str = HEADS_ATTR) -> bool:
    """True when some submodule carries a ``num_heads`` attribute."""
    return any(isinstance(getattr(m, heads_attr, None), int) for m in module.modules())


def _call(module, example_inputs):
    return module(*example_inputs)


def _flatten(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    return []


def _output_layers(module: "nn.Module", example_inputs) -> list["nn.Module"]:
    """Conv/Linear layers whose output is a model output, plus the last one executed."""
    import torch
    from torch import nn

    order: list[nn.Module] = []
    outs: dict[int, nn.Module] = {}

    def hook(m, _inp, out):
        order.append(m)
        for t in _flatten(out):
            outs[id(t)] = m

    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    handles = [m.register_forward_hook(hook) for m in layers]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = _call(module, example_inputs)
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    found = [outs[id(t)] for t in _flatten(out) if id(t) in outs]
    if order:
        found.append(order[-1])
    uniq: list[nn.Module] = []
    for m in found:
        if all(m is not u for u in uniq):
            uniq.append(m)
    return uniq


def _check_runs(module, example_inputs, method: str) -> None:
    import torch

    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            _call(module, example_inputs)
    except Exception as e:  # noqa: BLE001 -- any failure makes this candidate unusable
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"model no longer runs after {method} pruning: {type(e).__name__}: {e}") from e
    finally:
        module.train(was_training)


def _round_keep(n: int, ratio: float, round_to: int = 1) -> int:
    """How many of ``n`` units to keep: >= 1, a multiple of round_to where possible, <= n."""
    from planner.config import round_keep

    return round_keep(n, ratio, round_to)


def transformer_widths(module: "nn.Module") -> dict[str, list] | None:
    """The widths head/FFN pruning changes, for `planner.space` to predict a pruned model's layer shapes from:
    ``heads``: [num_heads, head_dim] per attention module (none when the model's attention is left alone),
    ``ffn``: the hidden width per FFN.  None for a model `prune` does not prune as a transformer."""
    scope_ffn = getattr(module, SCOPE_ATTR, None) == "ffn"
    if not (scope_ffn or is_transformer(module)):
        return None
    heads, ffn = [], []
    for _, m in module.named_modules():
        h, hd = getattr(m, HEADS_ATTR, None), getattr(m, HEAD_DIM_ATTR, None)
        if not scope_ffn and isinstance(h, int) and isinstance(hd, int) and not isinstance(h, bool):
            heads.append([h, hd])
        f = _ffn_of(m, FFN_LAYOUTS)
        if f is not None:
            ffn.append(int(f[1].in_features))
    return {"heads": heads, "ffn": ffn}


def channel_widths(module: "nn.Module", example_inputs) -> dict[str, list] | None:
    """For a model `prune` prunes by channels: ``channels``, the output width of each Conv/Linear it may narrow
    (not the output layers), for `planner.space` to tell a ratio and round_to that keep every channel.  None for a
    transformer (`transformer_widths`)."""
    if getattr(module, SCOPE_ATTR, None) == "ffn" or is_transformer(module):
        return None
    return {"channels": [n for _, n in _narrowed(module, _output_layers(module, tuple(example_inputs)))]}


def _narrowed(module, ignored) -> list[tuple]:
    """(layer, output width) of each Conv/Linear whose outputs channel pruning may narrow (not in ``ignored``)."""
    from torch import nn

    return [(m, int(m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features))
            for m in module.modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and not any(m is i for i in ignored)]


# --------------------------------------------------------------------------- channels (DepGraph)


def _prune_channels(module, ratio: float, p: int, round_to: int, example_inputs):
    import torch
    import torch_pruning as tp

    ignored = _output_layers(module, example_inputs)
    flags = {name: prm.requires_grad for name, prm in module.named_parameters()}
    all_frozen = bool(flags) and not any(flags.values())
    was_training = module.training
    try:
        module.eval()  # BN statistics must not move while tracing
        for prm in module.parameters():
            prm.requires_grad_(True)  # DepGraph traces grad_fn
        Pruner = getattr(tp.pruner, "BasePruner", None) or tp.pruner.MetaPruner
        with torch.enable_grad():
            pruner = Pruner(
                module,
                example_inputs,
                importance=tp.importance.MagnitudeImportance(p=p),
                pruning_ratio=float(ratio),
                pruning_ratio_dict=_kept_ratios(module, ratio, round_to, ignored),
                ignored_layers=ignored,
                forward_fn=lambda m, x: m(*x),
            )
            pruner.step()
    except CandidateFailed:
        raise
    except Exception as e:  # noqa: BLE001
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"structured channel pruning failed (torch-pruning): {type(e).__name__}: {e}") from e
    finally:
        module.train(was_training)
        for name, prm in module.named_parameters():
            prm.requires_grad_(flags.get(name, not all_frozen))
    return module


def _kept_ratios(module, ratio: float, round_to: int, ignored) -> dict:
    """Per layer (each Conv/Linear whose outputs are pruned), the pruning ratio that keeps exactly
    `planner.config.round_keep` (n, ratio, round_to) of its n output channels: rounded *up* to a multiple of
    ``round_to``, as planner declares and predicts.  torch-pruning's own ``round_to`` rounds the kept channels
    down (digits-cnn at ratio 0.1, round_to 16 kept 16 of conv1's 32 channels) or, where that leaves none,
    prunes nothing, so a larger ``round_to`` pruned more or less at random."""
    from planner.config import round_keep

    out = {}
    for m, n in _narrowed(module, ignored):
        keep = round_keep(n, ratio, round_to)
        out[m] = 0.0 if keep >= n else 1.0 - (keep + 0.5) / n  # torch-pruning keeps int(n * (1 - r)) = keep
    return out


# --------------------------------------------------------------------------- transformer heads / FFN


def _norm(t, p: int):
    return t.abs().sum(dim=-1) if p == 1 else t.pow(2).sum(dim=-1)  # squared L2 ranks like L2


def _slice_linear(lin, idx, dim: int) -> None:
    """Keep ``idx`` along the output (dim=0) or input (dim=1) features of ``lin``, in place."""
    import torch
    from torch import nn

    with torch.no_grad():
        w = lin.weight.detach().index_select(dim, idx).clone()
        lin.weight = nn.Parameter(w, requires_grad=lin.weight.requires_grad)
        if dim == 0:
            if lin.bias is not None:
                lin.bias = nn.Parameter(lin.bias.detach()[idx].clone(), requires_grad=lin.bias.requires_grad)
            lin.out_features = int(idx.numel())
        else:
            lin.in_features = int(idx.numel())


def prune_transformer(
    module: "nn.Module",
    ratio: float,
    p: int = 1,
    round_to: int = 1,
    attn_names: tuple[str, str, str, str] = ATTN_PROJ,
    ffn_names: tuple[str, str] | None = None,
    heads_attr: str = HEADS_ATTR,
    head_dim_attr: str = HEAD_DIM_ATTR,
    prune_heads: bool = True,
) -> dict[str, Any]:
    """Remove the lowest-norm attention heads and FFN neurons, in place.

    An attention module is any submodule with integer ``heads_attr`` and ``head_dim_attr``
    attributes and Linear children named ``attn_names`` (q, k, v, o).  A head's score is
    the Lp norm of its q/k/v rows plus its o columns; ``round(H * (1 - ratio))`` heads
    (at least 1) are kept and ``num_heads`` (plus ``all_head_size``/``inner_dim`` when
    present) is updated.  The module's forward must use ``self.num_heads`` (and
    ``num_heads * head_dim`` for the merged width), not the model width.

    An FFN is any submodule whose Linear children match one of `FFN_LAYOUTS` (or only
    ``ffn_names`` = (fc1, fc2) when given): the input projections' out features equal the
    output projection's in features.  A neuron's score is the Lp norm of its rows in the
    input projections plus its column of the output projection; the kept count is at least 1
    and rounded up to ``round_to``.  ``prune_heads=False`` leaves attention alone (FFN only).
    """
    import torch
    from torch import nn

    qn, kn, vn, on = attn_names
    layouts = (((ffn_names[0],), ffn_names[1]),) if ffn_names else FFN_LAYOUTS
    heads_before = heads_after = ffn_before = ffn_after = 0
    n_attn = n_ffn = 0
    for name, m in list(module.named_modules()):
        H = getattr(m, heads_attr, None) if prune_heads else None
        if isinstance(H, int) and not isinstance(H, bool):
            lins = [getattr(m, n, None) for n in attn_names]
            hd = getattr(m, head_dim_attr, None)
            if not all(isinstance(x, nn.Linear) for x in lins) or not isinstance(hd, int):
                raise CandidateFailed(
                    FailReason.UNSUPPORTED,
                    f"head pruning: attention module {name or '<root>'!r} ({type(m).__name__}) needs int "
                    f"{heads_attr!r}/{head_dim_attr!r} attributes and Linear children {list(attn_names)}",
                )
            q, k, v, o = lins
            inner = H * hd
            if not (q.out_features == k.out_features == v.out_features == o.in_features == inner):
                raise CandidateFailed(
                    FailReason.UNSUPPORTED,
                    f"head pruning: {name!r}: q/k/v out features and o in features must all equal "
                    f"{heads_attr} * {head_dim_attr} = {inner} (grouped-query attention is not supported)",
                )
            n_attn += 1
            heads_before += H
            keep = _round_keep(H, ratio)
            heads_after += keep
            if keep >= H:
                continue
            with torch.no_grad():
                score = torch.zeros(H)
                for lin in (q, k, v):
                    score += _norm(lin.weight.detach().float().reshape(H, -1), p)
                score += _norm(o.weight.detach().float().t().reshape(H, -1), p)
            heads = torch.sort(torch.topk(score, keep).indices).values
            idx = (heads[:, None] * hd + torch.arange(hd)[None, :]).reshape(-1)
            for lin in (q, k, v):
                _slice_linear(lin, idx, 0)
            _slice_linear(o, idx, 1)
            setattr(m, heads_attr, keep)
            for attr in _INNER_ATTRS:
                if isinstance(getattr(m, attr, None), int) and getattr(m, attr) == inner:
                    setattr(m, attr, keep * hd)
        ffn = _ffn_of(m, layouts)
        if ffn is not None:
            ins, out = ffn
            n_ffn += 1
            d = out.in_features
            ffn_before += d
            keep = _round_keep(d, ratio, round_to)
            ffn_after += keep
            if keep >= d:
                continue
            with torch.no_grad():
                score = _norm(out.weight.detach().float().t(), p)
                for lin in ins:
                    score += _norm(lin.weight.detach().float(), p)
            idx = torch.sort(torch.topk(score, keep).indices).values
            for lin in ins:
                _slice_linear(lin, idx, 0)
            _slice_linear(out, idx, 1)
    if n_attn == 0 and n_ffn == 0:
        ffns = " or ".join(f"{list(a)} -> {b!r}" for a, b in layouts)
        where = f"no attention module (attribute {heads_attr!r}, children {list(attn_names)}) and " if prune_heads else ""
        raise CandidateFailed(FailReason.UNSUPPORTED, f"structured pruning: {where}no FFN (Linear children {ffns}) found")
    return {"attention_modules": n_attn, "heads_before": heads_before, "heads_after": heads_after,
            "ffn_modules": n_ffn, "ffn_neurons_before": ffn_before, "ffn_neurons_after": ffn_after}


def _ffn_of(m, layouts):
    """(input projections, output projection) of ``m`` when its children match a layout, else None."""
    from torch import nn

    for ins_names, out_name in layouts:
        ins = [getattr(m, n, None) for n in ins_names]
        out = getattr(m, out_name, None)
        if isinstance(out, nn.Linear) and all(isinstance(x, nn.Linear) and x.out_features == out.in_features for x in ins):
            return ins, out
    return None


# --------------------------------------------------------------------------- sparsity patterns


def _weight_layers(module, example_inputs):
    from torch import nn

    skip = _output_layers(module, example_inputs)
    return [(n, m) for n, m in module.named_modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and all(m is not s for s in skip)]


def _magnitude(module, ratio: float, example_inputs) -> dict[str, Any]:
    import torch

    zeros = total = layers = 0
    with torch.no_grad():
        for _, m in _weight_layers(module, example_inputs):
            w = m.weight
            k = int(ratio * w.numel())
            total += w.numel()
            if k == 0:
                continue
            flat = w.view(-1) if w.is_contiguous() else w.reshape(-1)
            idx = torch.topk(flat.detach().abs().float(), k, largest=False).indices
            flat[idx] = 0
            if not w.is_contiguous():
                w.copy_(flat.view_as(w))
            zeros += int((w == 0).sum())
            layers += 1
    return {"layers_pruned": layers, "sparsity": zeros / total if total else 0.0}


def _two_four(module, example_inputs) -> dict[str, Any]:
    """2:4 semi-structured sparsity: in every group of 4 consecutive *input-channel* weights, the 2 smallest
    are zeroed -- along the input features of a Linear, and along C at each (kh, kw) tap of a Conv weight
    [K, C, kh, kw], the layout sparse tensor cores (TensorRT's SPARSE_WEIGHTS) read.  A layer whose input
    channel count is not a multiple of 4 is skipped."""
    import torch

    layers = skipped = zeros = total = 0
    with torch.no_grad():
        for _, m in _weight_layers(module, example_inputs):
            w = m.weight
            if w.dim() < 2 or w.shape[1] % 4:
                skipped += 1
                continue
            # input channels last: [K, kh, kw, C] (Linear: [K, C]), then groups of 4 along C
            wc = w.detach().movedim(1, -1) if w.dim() > 2 else w.detach()
            g = wc.reshape(-1, 4)
            idx = torch.topk(g.abs().float(), 2, dim=-1, largest=False).indices
            mask = torch.ones_like(g, dtype=torch.bool).scatter_(-1, idx, False)
            pruned = (g * mask).reshape(wc.shape)
            w.copy_(pruned.movedim(-1, 1) if w.dim() > 2 else pruned)
            layers += 1
            zeros += int((w == 0).sum())
            total += w.numel()
    return {"layers_pruned": layers, "layers_skipped": skipped, "sparsity": zeros / total if total else 0.0}
