"""Memory of a zoo model's compiled training step (XLA's `memory_analysis`), remat off and on.

    python benchmarks/step_memory.py --model dynamic_v1fm                       # the paper's batch
    python benchmarks/step_memory.py --model dynamic_v1fm --set kernels=native  # the accelerator form
    python benchmarks/step_memory.py --model viv1t --clips 1 --mice 1
    python benchmarks/step_memory.py --model dwiseneuro --clips 2 --mice 1 --dtype bfloat16

Only compiles (nothing runs), so a step far larger than this machine's memory can be sized on
it. The batch defaults to the accelerator suite's (`sensorium_jax/benchmarking/suite.py`);
mice have 8,000 neurons each. The figures are for the backend compiling: on CPU the `auto`
kernels are the CPU forms (`--set kernels=native` sizes the accelerator's).
"""

from __future__ import annotations

import argparse
import dataclasses

from sensorium_jax.benchmarking import networks, suite


def main() -> None:
    entries = {entry.name: entry for entry in suite.FULL}
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(entries))
    parser.add_argument("--clips", type=int, help="clips per step (default: the suite's batch)")
    parser.add_argument("--frames", type=int, help="frames per clip (default: the suite's)")
    parser.add_argument("--mice", type=int, help="mice the clips take turns over (default: the suite's)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model config overrides")
    args = parser.parse_args()

    entry = entries[args.model]
    shapes = dataclasses.replace(entry.shapes, clips=args.clips or entry.shapes.clips,
                                 frames=args.frames or entry.shapes.frames)
    mice = args.mice or entry.mice
    print(f"{args.model}: {shapes.clips} clips x {shapes.frames} frames over {mice} mice of {shapes.neurons} "
          f"neurons, {args.dtype}")
    remats = (False, True) if entry.remat_key else (False,)
    for remat in remats:
        config = suite.configured(entry, False, args.dtype, remat)
        for override in args.set:
            key, value = override.split("=", 1)
            networks.set_path(config.model, key, value)
        training = networks.jax_training(config, shapes, mice)
        compiled = training.step.lower(training.state, training.batch).compile()
        temporaries = compiled.memory_analysis().temp_size_in_bytes
        total = suite.program_memory_bytes(compiled)
        print(f"  remat {'on ' if remat else 'off'}: temporaries {temporaries / 2**30:.2f} GiB, "
              f"program (arguments + outputs + temporaries) {total / 2**30:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
