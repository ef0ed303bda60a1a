"""Write a fresh probe scene as PNG and print questions about it with their answers.

    python examples/probe_scene.py examples/probe-scene.png --seed 7

The README's example image is ``--seed 7``: a test-split scene (disjoint from training
and validation) that no test or measured result uses.
"""

import argparse

from PIL import Image

from restore_mlx.eval.probe.questions import make_example


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="PNG to write")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    scene = make_example("test", args.seed, 0, "attribute")
    Image.fromarray(scene.image).save(args.out)
    objects = ", ".join(f"{o.color} {o.shape} at {o.cell}" for o in scene.objects)
    print(f"{args.out}: {objects}")
    print(f'"{scene.question}" -> {scene.answer}')


if __name__ == "__main__":
    main()
