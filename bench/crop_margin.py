"""Measures the face-crop rule: how OpenCV's Haar box relates to a FER2013 face crop.

Each FER2013 face is upscaled, padded with its own edge pixels and run through the same
cascade the daemon uses; the median ratio of box side to crop side gives the margin the
daemon must add around a detector box to see a face the way the model was trained.

    python bench/crop_margin.py --data PATH/fer2013.csv.gz [--faces 1500]
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

from edge.tools.datasets import load_fer2013
from edge.vision.detect import DEFAULT_CASCADE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--usage", default="PublicTest")
    parser.add_argument("--faces", type=int, default=1500)
    args = parser.parse_args()
    faces = load_fer2013(args.data, args.usage)
    cascade = cv2.CascadeClassifier(str(DEFAULT_CASCADE))
    side, pad = 192, 48
    ratios, dx, dy = [], [], []
    for face in faces.images[: args.faces]:
        big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        padded = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = cascade.detectMultiScale(padded, 1.1, 5, minSize=(60, 60))
        if len(found) == 0:
            continue
        x, y, w, h = max(found, key=lambda b: b[2] * b[3])
        ratios.append(w / side)
        dx.append((x + w / 2 - pad - side / 2) / w)
        dy.append((y + h / 2 - pad - side / 2) / w)
    ratio = float(np.median(ratios))
    print(
        json.dumps(
            {
                "faces": min(args.faces, len(faces)),
                "detected": len(ratios),
                "box_to_crop_median": round(ratio, 4),
                "box_to_crop_iqr": [round(float(v), 4) for v in np.percentile(ratios, [25, 75])],
                "margin_each_side": round((1 / ratio - 1) / 2, 4),
                "centre_offset_box_widths": [round(float(np.median(dx)), 4), round(float(np.median(dy)), 4)],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
