"""The demo data's folder: written only where it can harm nothing.

Every generator of demo data (``medpipe synth``) marks the folder it made; demo data goes only
into a missing or empty folder, or one with that marker. Kept free of heavy imports: the
Snakefile asks it while it is read.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MARKER", "check_demo_folder"]

MARKER = ".medpipe-synth"


def check_demo_folder(out: str | Path) -> None:
    """Refuse to write demo data into a folder that holds anything this module did not write.

    Demo data goes only into a missing or empty folder, or one that carries the marker file of
    an earlier ``medpipe synth``: a user's own data must never receive demo films or labels
    (an overlay that sets ``data.root`` but leaves ``data.synthetic`` on would do that).

    Raises:
        FileExistsError: naming the folder, one of its files, and the ``synthetic: null`` fix.
    """
    out = Path(out)
    if not out.exists() or (out / MARKER).exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"synth: {out} is a file, not a folder for the demo data")
    # empty folders do not count: Snakemake makes the folders of a rule's outputs before it runs
    foreign = next((p for p in out.rglob("*") if not p.is_dir()), None)
    if foreign is not None:
        raise FileExistsError(
            f"synth: {out} is not empty ({foreign.relative_to(out)}) and "
            f"was not made by `medpipe synth` (no {MARKER}): demo data is written only into an "
            "empty folder or one synth made. If it holds your own data, set "
            "`data: {synthetic: null}` in your config so the pipeline reads it instead; else "
            "point data.root at an empty folder"
        )
