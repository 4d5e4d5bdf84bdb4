"""Built-in models, written without torchvision.  name -> "module:factory".

Each zoo module defines ``build(seed: int = 0) -> nn.Module`` (eval mode),
``INPUTS: tuple[InputSpec, ...]`` (without the batch axis) and ``OUTPUT_KIND``.
"""

ZOO: dict[str, str] = {
    "tiny-mlp": "planner.zoo.mlp",
    "resnet18": "planner.zoo.resnet",
    "bert-mini": "planner.zoo.bert",
    "gpt-mini": "planner.zoo.gpt",
    "digits-cnn": "planner.zoo.digits",
    "minilm": "planner.zoo.minilm",
    "smollm2-135m": "planner.zoo.smollm2",
}
