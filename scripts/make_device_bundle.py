"""Build `.device/` (git-ignored): what a borrowed GPU machine needs for the MovieLens benches, under 64 MiB.

    python scripts/make_device_bundle.py [--shared ../shared] [--out .device]

It copies MovieLens-100K (posters, items/users CSVs, the ml-100k files; not item_features.csv), the
MobileNetV2 folder, and MiniLM cut to its first `encoder.text_layers` layers (the only ones the
project uses; 2 by default) and stored in float16. The config says float32, so it loads and runs in
float32 there; only the weights' rounding differs from ../shared. Never commit the result: the
dataset is research-only. scripts/gpu_bench.sh reads it.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from em3.config import EncoderConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default=str(ROOT.parent / "shared"), help="the shared folder (models/, data/)")
    p.add_argument("--out", default=str(ROOT / ".device"), help="where to build the bundle")
    args = p.parse_args(argv)
    shared, out = Path(args.shared), Path(args.out)
    ml, mobilenet = shared / "data" / "movielens-100k", shared / "models" / "mobilenet_v2_1.0_224_coral"
    minilm = shared / "models" / "all-MiniLM-L6-v2"
    for path in (ml, mobilenet, minilm):
        if not path.exists():
            print(f"error: {path} is missing", file=sys.stderr)
            return 2

    shutil.copytree(ml, out / "movielens-100k", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("item_features.csv"))
    shutil.copytree(mobilenet, out / "models" / mobilenet.name, dirs_exist_ok=True)

    from transformers import AutoModel, AutoTokenizer

    layers = EncoderConfig().text_layers
    dest = out / "models" / f"all-MiniLM-L6-v2-{layers}layer-fp16"
    model = AutoModel.from_pretrained(minilm, num_hidden_layers=layers)
    model.half().save_pretrained(dest)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(dest)
    cfg = dest / "config.json"
    cfg.write_text(cfg.read_text().replace('"dtype": "float16"', '"dtype": "float32"'))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB (the device tool carries at most 64 MiB with the working tree)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
