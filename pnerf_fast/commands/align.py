"""pnerf align: one real photo -> a subject folder ready for finetuning."""
NAME = "align"
HELP = "Detect the face in a photo (offline, MediaPipe), frame it like the rig's frontal camera and write a subject folder."


def add_arguments(p):
    p.add_argument("photo", help="input photo (any format PIL reads; EXIF rotation is applied)")
    p.add_argument("--out", required=True, metavar="DIR", help="subject folder to write (replaced if it is already a subject folder)")
    p.add_argument("--res", type=int, default=128, help="output resolution in pixels, square (default: 128)")
    p.add_argument("--preview", metavar="PNG", help="also write a preview with the 24 landmarks drawn")
    p.add_argument("--refine-landmarks", action="store_true", help="MediaPipe's refined eye/lip model (slower; same 24 points)")
    p.add_argument("--no-segment", action="store_true",
                   help="do not compute a foreground (person) mask for photos without an alpha channel "
                        "(by default MediaPipe Selfie Segmentation masks out the background)")
    p.add_argument("--mask-preview", metavar="PNG", help="also write a preview of the mask (crop | mask | cut-out on a checkerboard)")


def run(args):
    import logging
    import warnings

    from .._io import check_output
    from ..data.photo import write_photo_subject
    from ..face.align import align_photo, draw_landmarks, draw_mask

    if not 16 <= args.res <= 4096:
        raise ValueError(f"argument --res: must be in [16, 4096], got {args.res}")
    if not args.photo.strip():
        raise ValueError("argument photo: must not be empty")
    check_output(args.out, "--out", [args.photo], kind="dir")
    for name, p in (("--preview", args.preview), ("--mask-preview", args.mask_preview)):
        check_output(p, name, [args.photo, args.out])
        if p is not None and not p.lower().endswith(".png"):
            raise ValueError(f"argument {name}: must end in .png, got {p!r}")
    logging.getLogger("pnerf_fast.face.align").setLevel(logging.ERROR)  # warnings are printed below instead
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aligned = align_photo(args.photo, res=args.res, refine_landmarks=args.refine_landmarks, segment=not args.no_segment)
    for w in caught:
        print(f"warning: {w.message}")
    out = write_photo_subject(aligned, args.out)

    w, h = aligned.photo_size
    x0, y0, x1, y1 = aligned.crop_box
    t = aligned.canonical_transform()
    faces = f"{aligned.num_faces} face" + ("s (using the largest)" if aligned.num_faces > 1 else "")
    print(f"photo:     {aligned.source} ({w}x{h}), {faces}, via {aligned.detection_method}")
    print(f"crop:      x {x0:.1f}..{x1:.1f}, y {y0:.1f}..{y1:.1f} ({x1 - x0:.1f} px square"
          f"{f', {aligned.outside_fraction:.0%} outside the photo (edge pixels repeated)' if aligned.outside_fraction > 0.005 else ''})"
          f" -> {aligned.res}x{aligned.res}" + (" (upsampled)" if aligned.crop_scale > 1 else ""))
    print(f"camera:    rig frontal camera, {aligned.res}x{aligned.res}, fx = {aligned.camera.fx:.2f} px")
    print(f"landmarks: 24 lifted to 3D; fit to the template: rms {aligned.template_fit_rms():.3f} units, "
          f"scale {t.scale:.3f}, rotation {_angle_deg(t.rotation):.1f} deg")
    if aligned.mask_source == "photo":
        print("alpha:     the photo's alpha channel, kept as the view's mask (RGBA PNG)")
    elif aligned.mask_source == "segmentation":
        print(f"alpha:     foreground mask from MediaPipe Selfie Segmentation, {aligned.alpha.mean():.0%} of the crop (RGBA PNG)")
    else:
        print("alpha:     none (the whole crop is foreground)")
    print(f"wrote:     {out}/ (transforms.json, face.json, images/frontal.png)")
    if args.preview:
        draw_landmarks(aligned, args.preview)
        print(f"preview:   {args.preview}")
    if args.mask_preview:
        draw_mask(aligned, args.mask_preview)
        print(f"mask:      {args.mask_preview}")
    return 0


def _angle_deg(r) -> float:
    import numpy as np

    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))
