"""Command line: explain images in batch and write overlays, heatmaps and a JSON summary.

Usage::

    gradcam IMAGE_OR_FOLDER... --out DIR [--model NAME] [--layer DOTTED] [--target CLASS] [--guided]
    gradcam IMAGE... --out DIR [--classes NAME=W[,NAME=W...] | --negative | --region MASK.png [--target CLASS]]
    gradcam IMAGE... --out DIR --weights FILE --labels FILE [--source NAME] [--architecture NAME] [--activation sigmoid]
    gradcam --list-models
    gradcam --list-layers MODEL
    gradcam audit SOURCE --out DIR [--model NAME | --weights FILE ...] [--target true|predicted|CLASS] [--group COL]

A folder stands for the image files directly inside it (``formats.UPLOAD_SUFFIXES``: PNG, JPEG, WebP, BMP,
TIFF, DICOM), in name order.
Besides the pictures, ``summary.json`` holds everything (the objective explained included) and ``summary.csv``
one row per image (predictions and the map's peak). DICOM files are explained in their own window (first frame).

Targets beyond one class (:mod:`.objectives`): ``--classes`` a weighted sum of class scores, ``--negative`` the
evidence against a single-logit binary model's class, ``--region`` a segmentation model's class over a region
given as a mask image (non-zero pixels, resized to the model's input with nearest neighbours); a segmentation
model also gets ``<stem>_mask.png``, the predicted classes with the explained region outlined.

Exit status: 0 when every image was explained, 1 when some image failed (the others are still written),
2 for a usage error or an unknown/unavailable model, layer or class.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .sources import SOURCES, ModelRequest, load_user_model
from .dicom import is_dicom, read_dicom, render_frame
from .errors import GradCamError, ImageError, TargetError
from .explain import Explanation, explain
from .guided import guide
from .files import open_regular_file
from .formats import UPLOAD_SUFFIXES
from .imaging import load_image
from .layers import resolve_layer
from .masks import class_colour, mask_picture, region_from_picture
from .methods import METHODS
from .models import DEFAULT_MODEL, LoadedModel, available_models, load_model
from .objectives import BinaryLogit, Objective, RegionScore, WeightedClasses, default_objective
from .preprocess import to_input
from .render import COLORMAPS, DEFAULT_COLORMAP, colorize, gradient_to_rgb, overlay, to_png_bytes
from .tables import csv_table
from .targets import Prediction, resolve_class

__all__ = ["main"]

PROGRESS_MIN_IMAGES = 5


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    Example: ``main(["cat.jpg", "--out", "maps"])  # 0: maps/cat_overlay.png and summary.json written``.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["audit"]:  # a file named "audit" is given as ./audit
        return _audit(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    listing = args.list_models or args.list_layers is not None
    if not listing and not args.images:
        parser.error("give at least one IMAGE (or --list-models / --list-layers MODEL)")
    if not listing and args.out is None:
        parser.error("the following arguments are required: --out")
    _check_custom_flags(parser, args)
    _check_target_flags(parser, args)
    try:
        if args.list_models:
            _list_models()
            return 0
        if args.list_layers is not None:
            _list_layers(load_model(args.list_layers))
            return 0
        args.images = _expand(args.images)
        loaded = _load(args)
        layer = resolve_layer(loaded.model, args.layer or loaded.default_layer)[0]
        target = _target(args, loaded)
        region = None if args.region is None else load_image(args.region)
    except GradCamError as exc:
        print(f"error: {_printable(exc)}", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(
            f"error: cannot create the output folder {_printable(args.out)} ({_printable(exc.strerror or exc)}).",
            file=sys.stderr,
        )
        return 2
    return _run(args, loaded, layer, target, region)


def _expand(paths: Sequence[Path]) -> list[Path]:
    """The given files, with each folder replaced by the image files directly inside it, in name order."""
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in UPLOAD_SUFFIXES)
        if not found:
            raise ImageError(f"The folder {path} holds no image files ({', '.join(UPLOAD_SUFFIXES)}).")
        files.extend(found)
    return files


def _picture(path: Path) -> Image.Image | Path:
    """A DICOM file rendered in its own window (first frame); any other file as is (``explain`` decodes it)."""
    try:
        handle = open_regular_file(path)  # never blocks on a FIFO
    except OSError:
        return path  # explain reports the unreadable file in its own words
    if handle is None:
        return path  # a FIFO, a device or a folder: explain refuses it in its own words, without reading it
    with handle:
        head = handle.read(132)
    return render_frame(read_dicom(path)) if is_dicom(head) else path


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _printable(text: object) -> str:
    """``str(text)`` with control characters (C0, DEL, C1) and undecodable bytes shown as escapes like ``\\x1b``.

    Every file name and message the command line prints goes through it, so a file name cannot move the
    cursor, recolour or retitle the terminal, or hide a line behind a carriage return.
    """
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], str(text))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradcam",
        description="Explain image classifications with Grad-CAM; write overlays, heatmaps and summary.json.",
    )
    parser.add_argument(
        "images", nargs="*", type=Path, metavar="IMAGE_OR_FOLDER", help="image files, or folders of them, to explain"
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--model", help=f"registered model (default: {DEFAULT_MODEL})")
    parser.add_argument("--layer", metavar="DOTTED", help="target layer (default: the model's default layer)")
    parser.add_argument("--target", metavar="INDEX_OR_NAME", help="class to explain (default: the top-1 class)")
    parser.add_argument("--method", choices=list(METHODS), default="gradcam", help="CAM method (default: gradcam)")
    targets = parser.add_argument_group("other targets (instead of one class)")
    targets.add_argument(
        "--classes", action="append", type=_weighted, metavar="NAME=W[,NAME=W...]",
        help="explain a weighted sum of class scores, e.g. effusion=1,nodule=0.5 (names or indices; repeatable)",
    )
    targets.add_argument(
        "--negative", action="store_true",
        help="for a single-logit binary model: explain the evidence for the negative side",
    )
    targets.add_argument(
        "--region", type=Path, metavar="MASK.png",
        help="for a segmentation model: explain the --target class (default: the top class) over this region "
        "(non-zero pixels, resized to the model's input); default: the class's predicted region",
    )
    parser.add_argument("--alpha", type=_alpha, default=0.5, help="heatmap opacity in [0, 1] (default: 0.5)")
    parser.add_argument(
        "--colormap", choices=list(COLORMAPS), default=DEFAULT_COLORMAP, help="heatmap colours (default: jet)"
    )
    parser.add_argument(
        "--guided", action="store_true", help="also write Guided Grad-CAM (guided backpropagation x the map) as a PNG"
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar even if stderr is no terminal")
    custom = parser.add_argument_group("your own model (instead of --model)")
    custom.add_argument(
        "--source",
        choices=list(SOURCES),
        default=None,
        help="where the model comes from (default: torchvision); "
        + "; ".join(f"{source.name}: {source.files}" for source in SOURCES.values()).replace("%", "%%"),
    )
    custom.add_argument(
        "--weights", type=Path, metavar="FILE", help="the model's file: weights, an .onnx graph, or a folder/zip"
    )
    custom.add_argument(
        "--architecture",
        metavar="NAME",
        help="the network's name in its library, e.g. resnet18 (default: recognised where possible)",
    )
    custom.add_argument("--labels", type=Path, metavar="FILE", help="class names: one per line, or JSON")
    custom.add_argument(
        "--activation", choices=["softmax", "sigmoid"], help="softmax (single-label, default) or sigmoid (multi-label)"
    )
    custom.add_argument(
        "--input-size", type=int, metavar="N", help="shorter side of the input (default: the source's, else 224)"
    )
    custom.add_argument("--mean", type=_floats, metavar="A,B,C", help="normalisation mean (default: ImageNet's)")
    custom.add_argument("--std", type=_floats, metavar="A,B,C", help="normalisation std (default: ImageNet's)")
    custom.add_argument("--grayscale", action="store_true", help="feed the model a grayscale image")
    listing = parser.add_mutually_exclusive_group()
    listing.add_argument("--list-models", action="store_true", help="list the registered models and exit")
    listing.add_argument("--list-layers", metavar="MODEL", help="list a model's candidate layers and exit")
    return parser


def _alpha(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def _floats(text: str) -> tuple[float, ...]:
    """argparse type: one or three comma-separated numbers."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 1 or 3 comma-separated numbers") from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"{text!r} is not 1 or 3 comma-separated numbers")
    return values


def _weighted(text: str) -> list[tuple[str, float]]:
    """argparse type: ``NAME=W`` pairs separated by commas (a name may hold commas: ``tabby, tabby cat=1``)."""
    pairs: list[tuple[str, float]] = []
    pending = ""
    for part in text.split(","):
        pending = f"{pending},{part}" if pending else part
        if "=" not in part:
            continue
        name, _, weight = pending.rpartition("=")
        try:
            value = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"the weight of {name.strip()!r} is not a number: {weight!r}") from None
        if not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"the weight of {name.strip()!r} must be a finite number, not {weight}")
        if not name.strip():
            raise argparse.ArgumentTypeError(f"{pending!r} names no class (write NAME=WEIGHT)")
        pairs.append((name.strip(), value))
        pending = ""
    if pending or not pairs:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=WEIGHT pairs separated by commas")
    return pairs


def _check_target_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--target, --classes, --negative and --region ask for different objectives: only --region takes --target."""
    given = [flag for flag, value in (("--target", args.target), ("--classes", args.classes),
                                      ("--negative", args.negative), ("--region", args.region)) if value]
    if len(given) > 1 and given != ["--target", "--region"]:
        parser.error(f"{given[0]} and {given[1]} ask for different targets: give one")


def _target(args: argparse.Namespace, loaded: LoadedModel) -> int | Objective | None:
    """What --target, --classes or --negative ask of this model (``None``: the default; a region is per image).

    Raises:
        TargetError: an unknown class, or a flag that does not fit the model (one sentence).
    """
    outputs = len(loaded.categories)
    if args.region is not None and not loaded.segmentation:
        raise TargetError(f"--region is for a segmentation model; {loaded.title} classifies whole images.")
    if args.classes and loaded.segmentation:
        raise TargetError("--classes is for a classifier; a segmentation model explains one class: use --target.")
    if args.negative and (loaded.segmentation or outputs != 1):
        raise TargetError(
            f"--negative is for a model with a single output (a binary logit); {loaded.title} has {outputs} "
            "classes: use --target CLASS."
        )
    if args.negative:
        return BinaryLogit(positive=False)
    if args.classes:
        weights: dict[int, float] = {}
        for name, weight in (pair for group in args.classes for pair in group):
            index = resolve_class(name, loaded.categories)
            if index in weights:
                raise TargetError(f"--classes names {loaded.categories[index]!r} twice; give each class once.")
            weights[index] = weight
        return WeightedClasses(weights)
    return None if args.target is None else resolve_class(args.target, loaded.categories)


def _region_target(picture: Image.Image, mask: Image.Image, loaded: LoadedModel, index: int | None) -> RegionScore:
    """``index``'s score (default: the top class) over ``mask``, resized to the model's input for ``picture``."""
    height, width = loaded.preprocessing.input_size(picture.width, picture.height)
    if index is None:
        with torch.no_grad():
            output = loaded.model(to_input(picture, loaded.preprocessing))
        index = default_objective(output, loaded.activation).index
    return RegionScore(index, region_from_picture(mask, (height, width)))


def _objective_summary(args: argparse.Namespace, loaded: LoadedModel, target: int | Objective | None) -> dict:
    """What was asked, for summary.json: ``{"type": "weighted classes", "weights": [...]}`` and the like."""
    if isinstance(target, WeightedClasses):
        return {"type": "weighted classes", "weights": [
            {"index": i, "label": loaded.categories[i], "weight": w} for i, w in target.weights]}
    if isinstance(target, BinaryLogit):
        return {"type": "binary logit", "evidence": "positive" if target.positive else "negative"}
    chosen = None if target is None else {"index": target, "label": loaded.categories[target]}
    if args.region is not None:
        return {"type": "region", "class": chosen or "top class", "mask": str(args.region)}
    if loaded.segmentation:
        return {"type": "predicted region", "class": chosen or "top class"}
    return {"type": "class", "class": chosen or "top class"}


def _mask_colours(loaded: LoadedModel) -> dict[str, str]:
    """Each class's colour in the ``_mask.png`` pictures, as ``#rrggbb``."""
    return {label: "#{:02x}{:02x}{:02x}".format(*class_colour(i)) for i, label in enumerate(loaded.categories)}


_CUSTOM_OPTIONS = ("source", "architecture", "labels", "activation", "input_size", "mean", "std", "grayscale")


def _check_custom_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--weights needs --labels, excludes --model, and the other custom flags need it."""
    if args.weights is None:
        given = [name for name in _CUSTOM_OPTIONS if getattr(args, name) not in (None, False)]
        if given:
            parser.error(f"--{given[0].replace('_', '-')} is for your own model: give --weights too")
        return
    if args.model is not None:
        parser.error("--model and --weights are mutually exclusive: give one model")
    if args.list_models or args.list_layers is not None:
        parser.error("--weights cannot be combined with --list-models / --list-layers")
    if args.labels is None and SOURCES[args.source or "torchvision"].needs_labels:
        parser.error("--weights needs --labels FILE")


def _load(args: argparse.Namespace) -> LoadedModel:
    """The registered model named by --model, or your own model from --weights."""
    if args.weights is None:
        return load_model(args.model or DEFAULT_MODEL)
    request = ModelRequest(
        weights=args.weights,
        labels=args.labels,
        architecture=args.architecture,
        activation=args.activation or "softmax",
        input_size=args.input_size,
        mean=args.mean,
        std=args.std,
        grayscale=args.grayscale,
    )
    return load_user_model(args.source or "torchvision", request)


def _audit_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradcam audit",
        allow_abbrev=False,
        description="Audit a data set: explain every image on Ray Data, find the model's strategies per class "
        "(SpRAy) and flag possible shortcuts; resumable. The model is chosen as for gradcam: --model NAME, or "
        "--weights FILE --labels FILE [--source ...].",
    )
    parser.add_argument("source", type=Path, metavar="SOURCE",
                        help="a folder (class sub-folders give the labels), a CSV/Parquet manifest, or DICOM files")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="audit folder (continued if present)")
    parser.add_argument("--layer", metavar="DOTTED", help="target layer (default: the model's default layer)")
    parser.add_argument("--method", choices=list(METHODS), default="gradcam", help="CAM method (default: gradcam)")
    parser.add_argument("--target", default="predicted", metavar="RULE",
                        help="true (the label), predicted (default) or a class name or index")
    parser.add_argument("--path-column", default="path", help="manifest column of image paths (default: path)")
    parser.add_argument("--label-column", default="label", help="manifest column of true labels (default: label)")
    parser.add_argument("--group", action="append", metavar="COLUMN",
                        help="manifest column to compare groups by, repeatable (default: every other column)")
    parser.add_argument("--region", action="append", default=[], metavar="NAME=X0,Y0,X1,Y1",
                        help="record each map's heat share in this box (fractions of the image), repeatable")
    parser.add_argument("--object", metavar="X0,Y0,X1,Y1", help="where the object is: flag clusters hot outside it")
    parser.add_argument("--workers", type=int, default=1, help="explaining Ray actors, one model each (default: 1)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch and per part (default: 16)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when the cluster has GPUs")
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="an existing Ray cluster (default: RAY_ADDRESS, else Ray starts locally)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar even if stderr is no terminal")
    return parser


def _audit(argv: list[str]) -> int:
    """``gradcam audit SOURCE --out DIR``: run the audit pipeline, then SpRAy and the group statistics.

    Model options are those of the main command (parsed by its own parser, then loaded by ``_load`` in every Ray
    actor). Exit status: 0, 1 when some file was bad (listed in failed.csv), 2 for a usage or settings error,
    130 when interrupted (run the same command again to continue).
    """
    from .audit_report import analyse_audit
    from .audit_run import AuditSettings, run_audit
    from .audit_source import read_source
    from .heat import parse_region

    args, rest = _audit_parser().parse_known_args(argv)
    model_parser = _parser()
    model_args = model_parser.parse_args(rest)
    if model_args.images or model_args.list_models or model_args.list_layers is not None:
        model_parser.error(f"gradcam audit takes one SOURCE; unrecognized arguments: {' '.join(rest)}")
    if model_args.classes or model_args.negative or model_args.region is not None:
        model_parser.error("gradcam audit explains one class per image: --classes, --negative and --region are not "
                           "taken")
    _check_custom_flags(model_parser, model_args)
    bar: list[_Progress] = []

    def progress(done: int, total: int, rate: float) -> None:
        if not bar:
            bar.append(_Progress(total, enabled=args.progress or sys.stderr.isatty()))
        bar[0].total = total
        bar[0].update(done, f"{rate:.1f} images/s")

    try:
        source = read_source(args.source, path_column=args.path_column, label_column=args.label_column,
                             group_columns=args.group)
        settings = AuditSettings(
            model=functools.partial(_load, model_args), layer=args.layer, method=args.method, target=args.target,
            regions=tuple(parse_region(text) for text in args.region), workers=args.workers,
            batch_size=args.batch_size, device=args.device,
        )
        object_box = parse_region(f"object={args.object}") if args.object else None
        run = run_audit(source, args.out, settings, progress=progress, ray_address=args.ray_address)
        if bar:
            bar[0].close()
        audit = analyse_audit(args.out, object_box=object_box)
    except KeyboardInterrupt:
        if bar:
            bar[0].clear()
        print("interrupted: the images explained so far are kept; run the same command again to continue.",
              file=sys.stderr)
        return 130
    except GradCamError as exc:
        if bar:
            bar[0].clear()
        print(f"error: {_printable(exc)}", file=sys.stderr)
        return 2
    for path, reason in audit.failed.itertuples(index=False):
        print(f"error: {_printable(path)}: {_printable(reason)}", file=sys.stderr)
    flagged = audit.flagged()
    print(
        f"{run.explained} images explained, {run.skipped} already done, {len(audit.failed)} bad files "
        f"({run.images_per_second:.1f} images/s); {len(flagged)} of {len(audit.clusters)} clusters flagged as "
        f"possible shortcuts; results in {_printable(args.out)}"
    )
    for cluster in flagged:
        print(f"  {_printable(cluster.target)} cluster {cluster.index}: {cluster.size} images, "
              f"{', '.join(cluster.flags)}")
    return 1 if len(audit.failed) else 0


def _list_models() -> None:
    for status in available_models():
        state = "available" if status.available else "unavailable"
        detail = status.title if status.available else status.reason
        print(f"{status.name:<20} {state:<12} {detail}")


def _list_layers(loaded: LoadedModel) -> None:
    print(f"Candidate layers of {loaded.title}, in forward order (* = default):")
    for info in loaded.layers:
        default = info.name == loaded.default_layer
        print(f"{'*' if default else ' '} {info.describe()}{'  (default)' if default else ''}")


def _run(
    args: argparse.Namespace, loaded: LoadedModel, layer: str, target: int | Objective | None,
    region: Image.Image | None,
) -> int:
    """Explain every image, write its outputs and the summary; return 0, 1 (some image failed) or 2.

    ``region`` is the mask image of --region (made each image's region at its input size).
    """
    images: list[Path] = args.images
    show = len(images) >= PROGRESS_MIN_IMAGES and (args.progress or sys.stderr.isatty())
    progress = _Progress(len(images), enabled=show)
    explained: list[dict[str, Any]] = []
    rows: list[tuple[str, Explanation]] = []
    failed: list[dict[str, str]] = []
    for done, (path, stem) in enumerate(zip(images, _unique_stems(images)), start=1):
        progress.update(done - 1, _printable(path.name))
        try:
            picture = _picture(path)
            objective = target
            if region is not None:
                picture = load_image(picture)
                objective = _region_target(picture, region, loaded, target)
            result = explain(picture, loaded, layer, objective, args.method)
            outputs = _write_outputs(result, args.out, stem, args.alpha, args.colormap)
            if args.guided:
                outputs.update(_write_guided(result, loaded, args.out, stem))
        except ImageError as exc:
            message = str(exc)
        except OSError as exc:
            message = f"Could not write the outputs to {args.out} ({exc.strerror or exc})."
        except GradCamError as exc:  # a setting (layer, class) that fails for every image
            progress.clear()
            print(f"error: {_printable(exc)}", file=sys.stderr)
            return 2
        else:
            explained.append(_image_summary(path, result, outputs))
            rows.append((str(path), result))
            if result.notice is not None:  # computed another way than asked, e.g. through onnxruntime
                progress.clear()
                print(f"note: {_printable(path)}: {_printable(result.notice)}", file=sys.stderr)
            continue
        progress.clear()
        print(f"error: {_printable(path)}: {_printable(message)}", file=sys.stderr)
        failed.append({"file": str(path), "error": message})
    progress.close()
    summary = {
        "model": loaded.name,
        "activation": loaded.activation,
        "layer": layer,
        "method": args.method,
        "objective": _objective_summary(args, loaded, target),
        **({"mask_colours": _mask_colours(loaded)} if loaded.segmentation else {}),
        "colormap": args.colormap,
        "alpha": args.alpha,
        "images": explained,
        "failed": failed,
    }
    summary_path = args.out / "summary.json"
    try:
        summary_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (args.out / "summary.csv").write_text(csv_table(rows), encoding="utf-8")
    except OSError as exc:
        print(
            f"error: {_printable(summary_path)}: could not write the summary ({_printable(exc.strerror or exc)}).",
            file=sys.stderr,
        )
        return 1
    print(f"{len(explained)} of {len(images)} images explained; summary in {_printable(summary_path)} and summary.csv")
    return 1 if failed else 0


def _unique_stems(paths: Sequence[Path]) -> list[str]:
    """File stems made unique (case-insensitively) with ``_2``, ``_3``... so outputs never overwrite each other."""
    used: set[str] = set()
    stems = []
    for path in paths:
        base = path.stem or "image"
        stem, n = base, 2
        while stem.casefold() in used:
            stem, n = f"{base}_{n}", n + 1
        used.add(stem.casefold())
        stems.append(stem)
    return stems


def _write_outputs(result: Explanation, out: Path, stem: str, alpha: float, colormap: str) -> dict[str, str]:
    """Write the overlay, the coloured heatmap and the raw heatmap; return their file names."""
    names = {"overlay": f"{stem}_overlay.png", "heatmap": f"{stem}_heatmap.png", "heatmap_npy": f"{stem}_heatmap.npy"}
    (out / names["overlay"]).write_bytes(to_png_bytes(overlay(result.image, result.heatmap, alpha, colormap)))
    (out / names["heatmap"]).write_bytes(to_png_bytes(colorize(result.heatmap, colormap)))
    np.save(out / names["heatmap_npy"], result.heatmap, allow_pickle=False)
    if result.segmentation is not None:
        names["mask"] = f"{stem}_mask.png"
        picture = mask_picture(result.segmentation, result.region, (result.image.height, result.image.width))
        (out / names["mask"]).write_bytes(to_png_bytes(picture))
    return names


def _write_guided(result: Explanation, loaded: LoadedModel, out: Path, stem: str) -> dict[str, str]:
    """Write the Guided Grad-CAM picture (zero is grey); return its file name."""
    name = f"{stem}_guided_gradcam.png"
    (out / name).write_bytes(to_png_bytes(gradient_to_rgb(guide(result, loaded).guided_gradcam)))
    return {"guided_gradcam": name}


def _prediction(prediction: Prediction) -> dict[str, Any]:
    return {"index": prediction.index, "label": prediction.label, "probability": prediction.probability}


def _image_summary(path: Path, result: Explanation, outputs: dict[str, str]) -> dict[str, Any]:
    return {
        "file": str(path),
        "outputs": outputs,
        "target": _prediction(result.target),
        "score": result.score,
        "predictions": [_prediction(p) for p in result.predictions],
        "input_size": list(result.input_size),
        "strength": result.strength,
        "notice": result.notice,
    }


class _Progress:
    """A one-line progress bar on stderr (a no-op when disabled)."""

    def __init__(self, total: int, enabled: bool, width: int = 24) -> None:
        self.total, self.enabled, self.width = total, enabled, width
        self._shown = 0

    def update(self, done: int, label: str = "") -> None:
        if not self.enabled:
            return
        filled = self.width * done // self.total
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} {label}"[:79]
        sys.stderr.write("\r" + line.ljust(self._shown))
        sys.stderr.flush()
        self._shown = len(line)

    def close(self) -> None:
        """Show the finished bar and end its line."""
        if self.enabled:
            self.update(self.total, "done")
            sys.stderr.write("\n")
            self._shown = 0

    def clear(self) -> None:
        if self.enabled and self._shown:
            sys.stderr.write("\r" + " " * self._shown + "\r")
            sys.stderr.flush()
            self._shown = 0
