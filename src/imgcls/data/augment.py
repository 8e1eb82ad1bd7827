"""Data augmentation: Keras' own preprocessing layers, run in tf.data on training batches only.

    augment = make_augmenter(config)       # None for data.augment: none
    train = train.map(augment)             # batches of (float32 0-255 images, labels)

Presets (`data.augment`):

    light    RandomFlip (data.augment_flip), RandomRotation 0.05, RandomZoom 0.1,
             RandomTranslation 0.1, RandomContrast 0.2, RandomBrightness 0.2
    strong   light, then RandAugment (2 of its 11 Keras ops per batch, magnitude 0.5),
             RandomErasing (up to half the images), then MixUp or CutMix (one of the
             two per batch, half the time each); mixing blends labels too, so it
             needs one-hot labels (label_mode categorical)

RandAugment is applied with the same policy as `keras.layers.RandAugment`
(the same 11 Keras layers, `num_ops` of them chosen at random per batch) but
only the chosen layers run: Keras 3.15's layer computes all 11 transforms
for every op and then selects, which on a 2-core CPU fed 46 images/s at
64x64 and starved training. `tf.switch_case` runs just the chosen branch.

Augmentation lives in the input pipeline, not in the model: it runs on the
CPU beside training, never inside the (possibly XLA-compiled) train step,
never on validation or test images, and `best.keras` carries none of it.
Grayscale images are augmented as three equal channels (RandAugment's colour
operations need three) and turned back into one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from imgcls.runtime import import_tensorflow

if TYPE_CHECKING:
    from imgcls.config import Config


def make_augmenter(config: Config) -> Callable | None:
    """A tf.data map function (images, labels) -> (images, labels) for a batch, or None."""
    preset = config.data.augment
    if preset == "none":
        return None
    from keras import layers

    geometric = [
        layers.RandomRotation(0.05, fill_mode="reflect"),
        layers.RandomZoom(0.1, fill_mode="reflect"),
        layers.RandomTranslation(0.1, 0.1, fill_mode="reflect"),
        layers.RandomContrast(0.2, value_range=(0, 255)),
        layers.RandomBrightness(0.2, value_range=(0, 255)),
    ]
    if config.data.augment_flip != "none":
        geometric.insert(0, layers.RandomFlip(config.data.augment_flip))
    strong = preset == "strong"
    rand_augment = _rand_augment(num_ops=2, factor=0.5) if strong else None
    erasing = layers.RandomErasing(factor=0.5, value_range=(0, 255)) if strong else None
    mix_up, cut_mix = (layers.MixUp(alpha=0.2), layers.CutMix(factor=1.0)) if strong else (None, None)
    grey = config.channels == 1

    def augment(images, labels):
        tf = import_tensorflow()

        if grey:
            images = tf.image.grayscale_to_rgb(images)
        for layer in geometric:
            images = layer(images, training=True)
        if strong:
            images = erasing(rand_augment(images), training=True)
            pair = {"images": images, "labels": labels}
            pair = tf.cond(tf.random.uniform(()) < 0.5, lambda: mix_up(pair, training=True),
                           lambda: cut_mix(pair, training=True))
            images, labels = pair["images"], pair["labels"]
        images = tf.clip_by_value(images, 0.0, 255.0)
        if grey:
            images = tf.image.rgb_to_grayscale(images)
        return images, labels

    return augment


def _rand_augment(num_ops: int, factor: float) -> Callable:
    """RandAugment's policy from Keras' layers: `num_ops` random ops per batch, only those computed."""
    tf = import_tensorflow()
    from keras import layers

    value_range = (0, 255)
    ops = [
        layers.RandomShear(x_factor=factor, y_factor=factor),
        layers.RandomTranslation(factor, factor),
        layers.RandomRotation(factor),
        layers.RandomBrightness(factor, value_range=value_range),
        layers.RandomColorDegeneration(factor, value_range=value_range),
        layers.RandomContrast(factor, value_range=value_range),
        layers.RandomSharpness(factor, value_range=value_range),
        layers.RandomPosterization(max(1, int(8 * factor)), value_range=value_range),
        layers.Solarization(addition_factor=factor, threshold_factor=factor, value_range=value_range),
        layers.AutoContrast(value_range=value_range),
        layers.Equalization(value_range=value_range),
    ]

    def apply(images):
        for choice in tf.unstack(tf.random.uniform((num_ops,), 0, len(ops), dtype=tf.int32)):
            images = tf.switch_case(choice, [lambda op=op: tf.cast(op(images, training=True), tf.float32) for op in ops])
        return images

    return apply
