"""``mirage render``: draw a WFDB record or DICOM ECG as the model sees it and as a clinician reads it.

Writes two PNGs: ``--out FILE.png`` is the ECG paper page (25 mm/s, 10 mm/mV, pink grid) and
``FILE.model.png`` the exact 224x224 model image of the same window after the shared pipeline
(:func:`engine.pipeline.model_inputs`). ``--st-table`` prints the measured ST-shift table of the
layouts instead and ``--probe`` a linear-probe AUROC of both layouts on PTB-XL (see
``docs/RENDERER.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirage render",
        description=(
            "Render one window of a WFDB record or DICOM 12-lead ECG two ways: on ECG paper for people (FILE.png) and as the "
            "224x224 MIRAGE model image (FILE.model.png), through the same pipeline as training and the stream. "
            "Prints the window's signal-quality flags; signals that are no standard lead (Frank leads vx/vy/vz, "
            "respiration) are ignored and listed as extra_signals."
        ),
        epilog="example: mirage render ../shared/data/ptbxl-sample/records500/00000/00077_hr --out ecg77.png",
    )
    p.add_argument("record", nargs="?", help="WFDB record path (with or without .hea) or DICOM ECG file (.dcm)")
    p.add_argument("--out", type=Path, help="paper PNG to write; the model image goes next to it as NAME.model.png")
    p.add_argument("--offset", type=float, default=0.0, help="window start in seconds into the record (default 0)")
    p.add_argument("--preset", default="default", help="MirageConfig preset for the model rate and window length (default: default)")
    p.add_argument("--layout", default="6x2", choices=["6x2", "3x4"], help="model-image layout (6x2 is what MIRAGE uses; 3x4 for comparison)")
    p.add_argument("--scale", type=int, default=1, help="enlarge the model PNG by this integer factor for viewing (pixels are repeated)")
    p.add_argument("--title", default=None, help="title printed on the paper page (default: the record name)")
    p.add_argument("--st-table", action="store_true", help="print the measured ST-shift table (6x2 vs 3x4) and exit")
    p.add_argument("--st-plot", type=Path, metavar="FILE.png", help="with --st-table: also save the layouts and the table as a figure")
    p.add_argument("--probe", type=Path, metavar="PTBXL_DIR", help="run the linear-probe AUROC of both layouts on a PTB-XL folder and exit")
    p.add_argument("--pool", type=int, default=8, help="average-pooling factor of the image for --probe (default 8)")
    return p


def render_main(argv: list[str]) -> int:
    """Entry point of ``mirage render``; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.st_table:
        from engine.render.validation import format_table, plot_st_validation, st_shift_table

        rows = st_shift_table()
        print(format_table(rows))
        if args.st_plot:
            plot_st_validation(str(args.st_plot), rows)
            print(f"figure written to {args.st_plot}")
        return 0
    if args.probe:
        from engine.render.probe import linear_probe

        print(json.dumps(linear_probe(args.probe, pool=args.pool)))
        return 0
    if not args.record or not args.out:
        _parser().print_usage()
        print("mirage render: RECORD and --out are required (or use --st-table)")
        return 2
    from matplotlib import image as mpimg

    from engine.config import get_preset
    from engine.data.wfdb_io import cut_window, read_record
    from engine.errors import MirageError
    from engine.pipeline import model_inputs, quality_flags, to_model_rate
    from engine.render.layout import get_layout
    from engine.render.numpy_renderer import render_batch
    from engine.render.paper import render_paper_png
    from engine.signal.quality import assess

    cfg = get_preset(args.preset)
    try:
        rec = read_record(args.record)
    except MirageError as exc:
        print(f"mirage render: {exc}")
        return 2
    x = to_model_rate(rec.signal, rec.fs, rec.leads, cfg, allow_missing=True)
    window = cut_window(x, cfg.fs, cfg, args.offset)
    report = assess(window, cfg.fs)
    inputs = model_inputs(window[None], cfg)
    image = inputs.image[0, 0] if args.layout == "6x2" else render_batch(inputs.ecg, cfg.fs, layout=get_layout(args.layout))[0, 0]
    if args.scale > 1:
        image = np.kron(image, np.ones((args.scale, args.scale), dtype=np.float32))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model_path = out.with_name(out.stem + ".model.png")
    mpimg.imsave(model_path, image, cmap="gray", vmin=0.0, vmax=1.0)
    render_paper_png(window, cfg.fs, out, title=args.title if args.title is not None else rec.name)
    print(json.dumps({"paper": str(out), "model_image": str(model_path), "layout": args.layout, "fs": cfg.fs,
                      "window_s": cfg.window_s, "quality_flags": quality_flags(window, cfg.fs) + rec.flags, "evaluable": report.evaluable,
                      "extra_signals": list(rec.extra_signals)}))
    return 0
