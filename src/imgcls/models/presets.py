"""Presets: registered models that are another model with other default options.

The seed notebooks' CNNs, exactly (parameter counts at 224x224, checked by tests/test_models.py):
celebs_cnn with 17 classes 9,536,945; monkeypox_cnn with 2 classes 22,175,138.
"""

from __future__ import annotations

from imgcls.models import simple_cnn  # noqa: F401  (registers the base model)
from imgcls.models.registry import register_preset

PRESETS = {
    "celebs_cnn": ("simple_cnn", "The 17-film-stars tutorial CNN: 4 conv, average pooling, dropout 0.5, flatten, dense 128.",
                   {"filters": [16, 32, 64, 128], "padding": "valid", "pooling": "avg", "pool": [True, True, True, False],
                    "batch_norm": False, "dropout": [0.0, 0.5, 0.5, 0.5], "head": "flatten", "dense": [128],
                    "head_dropout": 0.0}),
    "monkeypox_cnn": ("simple_cnn", "The monkeypox tutorial CNN: 3 conv, average pooling, dropout 0.3, flatten, dense 128.",
                      {"filters": [16, 32, 64], "padding": "valid", "pooling": "avg", "pool": [True, True, False],
                       "batch_norm": False, "dropout": [0.0, 0.3, 0.3], "head": "flatten", "dense": [128],
                       "head_dropout": 0.0}),
}

for _name, (_base, _description, _defaults) in PRESETS.items():
    register_preset(_name, _base, _description, **_defaults)
