"""``--model hf:DIR``: a local Hugging Face model directory (what ``save_pretrained`` writes), loaded in a worker.

The model class is the Auto class of ``--task`` (`planner.model.HF_TASKS`) when given, else the one the directory's
``config.json`` names (``architectures``), else ``AutoModel``.  Nothing is downloaded (``local_files_only``) and no
code from the directory runs (``trust_remote_code=False``): a model that needs its own code is refused with a
one-line error.  Weights: safetensors when the directory has them; pickled ``pytorch_model.bin`` only as
transformers loads them, with ``torch.load(weights_only=True)``.

Inputs: from the tokenizer in the directory (its input names, padded to a fixed length, ids below its vocabulary
size), else from its image processor's config (``pixel_values`` at its size), else from the model config's
``image_size``; ``--inputs`` (or the model YAML) replaces them.  A causal LM becomes planner's decoder
(`planner.llm.hf`), which has its own inputs.  Needs ``pip install 'planner[hf]'`` (transformers).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable

from planner.errors import ConfigError
from planner.model import HF_TASKS, InputSpec, ModelSpec

TEXT_LENGTH = 128  # tokens per text input when the tokenizer and config allow as many
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json")
EXAMPLE_TEXT = "planner measures each candidate deployment of this model on the target."


def _transformers(where: str):
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"{where}: hf:DIR models need transformers: pip install 'planner[hf]'") from None
    return transformers


def model_class(directory: Path, task: str | None, where: str):
    """The transformers class that builds the directory's model (see the module's docstring)."""
    transformers = _transformers(where)
    config = json.loads((directory / "config.json").read_text())
    if task is not None:
        return getattr(transformers, HF_TASKS[task])
    for arch in config.get("architectures") or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
        raise ConfigError(f"{where}: architecture {arch} is not in transformers {transformers.__version__} "
                          "(it needs the directory's own code, and planner runs none); pass --task "
                          f"({', '.join(HF_TASKS)}) to load it with a transformers class")
    return transformers.AutoModel


def factory(spec: ModelSpec) -> tuple[Callable[[], Any], dict[str, Any]]:
    """(factory, extras) for `planner.source`: extras' ``inputs`` is a function of the built module."""
    directory = Path(spec.ref[3:])
    where = f"model {spec.ref}"

    def build():
        cls = model_class(directory, spec.task, where)
        has_st = any(directory.glob("*.safetensors"))
        if not has_st and not any(directory.glob("pytorch_model*.bin")):
            raise ConfigError(f"{where}: no weights in {directory} (model.safetensors or pytorch_model.bin)")
        try:
            model = cls.from_pretrained(str(directory), trust_remote_code=False, local_files_only=True,
                                        use_safetensors=True if has_st else None, weights_only=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{where}: {cls.__name__}.from_pretrained failed: "
                              f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__}") from None
        return model.eval()

    return build, {"inputs": lambda module: inputs(directory, module, where)}


def _accepted(module) -> set[str]:
    try:
        return set(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return set()


def inputs(directory: Path, module, where: str) -> tuple[InputSpec, ...]:
    """The model's inputs, from its tokenizer or image processor (see the module's docstring)."""
    accepted = _accepted(module)
    config = getattr(module, "config", None)
    if any((directory / f).is_file() for f in TOKENIZER_FILES):
        return _text_inputs(directory, config, accepted, where)
    size = _image_size(directory, config)
    if size is not None and "pixel_values" in accepted:
        channels = int(getattr(config, "num_channels", 3) or 3)
        return (InputSpec("pixel_values", (channels, *size), "float32"),)
    raise ConfigError(f"{where}: inputs unknown (no tokenizer or image processor in the directory, no image_size in "
                      "its config); pass --inputs NAME:DIMxDIM[:DTYPE] or a model YAML with 'inputs'")


def _text_inputs(directory: Path, config, accepted: set[str], where: str) -> tuple[InputSpec, ...]:
    transformers = _transformers(where)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{where}: its tokenizer could not be loaded: {str(e).strip().splitlines()[0][:300]}") from None
    limits = [TEXT_LENGTH, getattr(config, "max_position_embeddings", None), getattr(tok, "model_max_length", None)]
    length = min(int(x) for x in limits if isinstance(x, int) and x > 0)
    enc = tok([EXAMPLE_TEXT], padding="max_length", max_length=length, truncation=True, return_tensors="np")
    vocab = min(len(tok), int(getattr(config, "vocab_size", len(tok)) or len(tok)))
    out = []
    for name in tok.model_input_names:
        if name not in enc or (accepted and name not in accepted):
            continue
        if name == "input_ids":
            low, high = 0, vocab
        elif name == "attention_mask":
            low, high = 1, 2  # synthetic inputs: every token attended
        else:
            low, high = 0, 1
        # padded on the right with 0 after the text: the length axis (served traffic with lengths: data)
        right = getattr(tok, "padding_side", "right") == "right"
        out.append(InputSpec(name, tuple(enc[name].shape[1:]), "int64", low, high, length_axis=0 if right else None))
    if not out:
        raise ConfigError(f"{where}: its tokenizer gives {', '.join(enc)}, none of which the model takes")
    return tuple(out)


def _image_size(directory: Path, config) -> tuple[int, int] | None:
    """(height, width) from the image processor's config (crop size, else size), else the model config's
    ``image_size``."""
    pre = directory / "preprocessor_config.json"
    if pre.is_file():
        p = json.loads(pre.read_text())
        for key in ("crop_size", "size"):
            s = p.get(key) if (key != "crop_size" or p.get("do_center_crop", True)) else None
            if isinstance(s, int):
                return s, s
            if isinstance(s, dict) and "height" in s and "width" in s:
                return int(s["height"]), int(s["width"])
            if isinstance(s, dict) and "shortest_edge" in s:
                return int(s["shortest_edge"]), int(s["shortest_edge"])
    size = getattr(config, "image_size", None)
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None
