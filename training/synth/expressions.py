"""Expression sampling: seven labelled categories mirroring BU-3DFE, built from ARKit blendshapes.

Each category is a recipe of blendshape weights; a sample scales the recipe by an intensity (large
expressions are well represented) and adds a few random small activations, so the network sees
both prototypical and in-between faces.
"""

from __future__ import annotations

import numpy as np

CATEGORIES = ("neutral", "anger", "disgust", "fear", "happy", "sad", "surprise")

RECIPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "anger": {"browDown_L": 1.0, "browDown_R": 1.0, "eyeSquint_L": 0.5, "eyeSquint_R": 0.5, "mouthPress_L": 0.6,
              "mouthPress_R": 0.6, "noseSneer_L": 0.4, "noseSneer_R": 0.4, "jawForward": 0.2},
    "disgust": {"noseSneer_L": 1.0, "noseSneer_R": 1.0, "mouthUpperUp_L": 0.8, "mouthUpperUp_R": 0.8,
                "browDown_L": 0.5, "browDown_R": 0.5, "cheekSquint_L": 0.5, "cheekSquint_R": 0.5, "mouthShrugLower": 0.4},
    "fear": {"browInnerUp_L": 1.0, "browInnerUp_R": 1.0, "eyeWide_L": 0.9, "eyeWide_R": 0.9, "mouthStretch_L": 0.7,
             "mouthStretch_R": 0.7, "jawOpen": 0.3},
    "happy": {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0, "cheekSquint_L": 0.7, "cheekSquint_R": 0.7, "eyeSquint_L": 0.4,
              "eyeSquint_R": 0.4, "jawOpen": 0.25, "mouthDimple_L": 0.3, "mouthDimple_R": 0.3},
    "sad": {"browInnerUp_L": 0.8, "browInnerUp_R": 0.8, "mouthFrown_L": 1.0, "mouthFrown_R": 1.0,
            "mouthShrugLower": 0.5, "eyeBlink_L": 0.2, "eyeBlink_R": 0.2},
    "surprise": {"browInnerUp_L": 1.0, "browInnerUp_R": 1.0, "browOuterUp_L": 1.0, "browOuterUp_R": 1.0,
                 "eyeWide_L": 1.0, "eyeWide_R": 1.0, "jawOpen": 0.8, "mouthFunnel": 0.3},
}


def sample_expressions(names: tuple[str, ...], n: int, rng: np.random.Generator,
                       categories: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sample n expressions.

    Args:
        names: the 53 blendshape names in the model's order.
        categories: optional (n,) category indices; sampled uniformly when None.
    Returns:
        weights (n, 53) float32 in [0, 1] and categories (n,) int64.
    """
    index = {name: i for i, name in enumerate(names)}
    if categories is None:
        categories = rng.integers(0, len(CATEGORIES), n)
    weights = np.zeros((n, len(names)), np.float32)
    for row, cat in enumerate(categories):
        intensity = rng.uniform(0.4, 1.2)  # beyond 1 and clipped: large expressions well represented
        for name, w in RECIPES[CATEGORIES[cat]].items():
            weights[row, index[name]] = w * intensity * rng.uniform(0.8, 1.2)
        extra = rng.choice(len(names), size=rng.integers(0, 4), replace=False)
        weights[row, extra] += rng.uniform(0.0, 0.4, len(extra))
        if rng.random() < 0.3:  # asymmetric blinks and talking mouths occur in photos
            weights[row, index[rng.choice(["eyeBlink_L", "eyeBlink_R", "jawOpen", "mouthSmile_L", "mouthSmile_R"])]] += rng.uniform(0.2, 0.9)
    return np.clip(weights, 0.0, 1.0), np.asarray(categories, np.int64)
