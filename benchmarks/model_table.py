"""The registry as a table: parameters (ours vs the official code), forward
multiply-adds at 64 px, and training throughput on this machine.

    KERAS_BACKEND=torch python -m benchmarks.model_table            # every model
    KERAS_BACKEND=jax python -m benchmarks.model_table --models vit,sl_pit --throughput-image-size 64

MFLOPs are counted as the papers count them (multiply-adds, from the
compiled graph of the backend: XLA's cost analysis on JAX, the graph
profiler on TensorFlow, torch's FlopCounterMode on PyTorch). Throughput is
`model.fit` images/s after a warm-up epoch, at the batch size given; the
last column is the ratio to `vit` measured in the same run (the baseline).
"""

import argparse
import time

import keras
import numpy as np

import keras_smallvit
from keras_smallvit.layers.attention import use_fused_attention
from keras_smallvit.models.registry import get_model_entry

# Parameter counts of the authors' official PyTorch code (issue 4's measurements):
# (32 px / 100 classes, 64 px / 200 classes).
OFFICIAL_PARAMETERS = {
    "vit": (2_709_796, 2_756_744),
    "sl_vit": (2_747_248, 2_906_228),
    "pit": (7_007_236, 7_049_192),
    "sl_pit": (8_676_664, 8_732_804),
    "swin": (7_107_838, 7_149_794),
    "sl_swin": (8_596_816, 8_652_956),
    "cait": (9_037_988, 9_084_936),
    "sl_cait": (9_075_436, 9_234_416),
    "t2t": (6_525_850, 6_675_902),
    "sl_t2t": (6_546_851, 6_696_904),
}


def forward_multiply_adds(model, image_size):
    """Multiply-adds of one forward pass of one image (backend-specific by nature),
    counted on the explicit attention (torch's counter does not see its CPU
    fused attention kernel): the same count whichever form runs."""
    with use_fused_attention(False):
        return _forward_multiply_adds(model, image_size)


def _forward_multiply_adds(model, image_size):
    x = np.zeros((1, image_size, image_size, 3), "float32")
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        state = [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]

        def forward(state, x):
            return model.stateless_call(*state, x, training=False)[0]

        cost = jax.jit(forward).lower(state, x).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return cost["flops"] / 2
    if backend == "tensorflow":
        import tensorflow as tf

        function = tf.function(lambda inputs: model(inputs, training=False))
        graph = function.get_concrete_function(tf.TensorSpec(x.shape, tf.float32)).graph
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        return tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops / 2
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:  # (under no_grad its module tracker fails)
        model(x, training=False)
    return counter.get_total_flops() / 2


def train_images_per_second(model, image_size, batch_size, steps):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch_size * steps, image_size, image_size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 100, len(x)), 100)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    model.fit(x[:batch_size], y[:batch_size], batch_size=batch_size, epochs=1, verbose=0)  # build + compile
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    return len(x) / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None, help="comma-separated names (default: every registered model)")
    parser.add_argument("--throughput-image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per model")
    parser.add_argument("--no-throughput", action="store_true")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else keras_smallvit.list_models()
    if not args.no_throughput and "vit" not in names:
        names = ["vit", *names]  # the baseline of the ratio column

    print(f"backend {keras.backend.backend()}; throughput at {args.throughput_image_size} px, batch {args.batch_size}")
    header = "| model | params 32 px/100 | official | params 64 px/200 | official | fwd MFLOPs 64 px | train img/s | vs vit |"
    print(header)
    print("|---" * 8 + "|")
    baseline = None
    for name in names:
        get_model_entry(name)  # a clear error for an unknown name, before building
        small = keras_smallvit.create_model(name, num_classes=100, image_size=32)
        large = keras_smallvit.create_model(name, num_classes=200, image_size=64)
        official = OFFICIAL_PARAMETERS.get(name, (None, None))
        macs = forward_multiply_adds(large, 64) / 1e6
        speed = ratio = None
        if not args.no_throughput:
            model = small if args.throughput_image_size == 32 else large
            if args.throughput_image_size not in (32, 64):
                model = keras_smallvit.create_model(name, num_classes=100, image_size=args.throughput_image_size)
            speed = train_images_per_second(model, args.throughput_image_size, args.batch_size, args.steps)
            baseline = speed if name == "vit" else baseline
            ratio = speed / baseline
        cells = [
            f"`{name}`",
            f"{small.count_params():,}",
            f"{official[0]:,}" if official[0] else "-",
            f"{large.count_params():,}",
            f"{official[1]:,}" if official[1] else "-",
            f"{macs:.1f}",
            "-" if speed is None else f"{speed:.1f}",
            "-" if ratio is None else f"{ratio:.2f}",
        ]
        print("| " + " | ".join(cells) + " |", flush=True)
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
