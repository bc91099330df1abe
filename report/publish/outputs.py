"""The output forms of `build` and `report`: a site folder (default), one HTML file, a PDF; any together.

Everything that can be refused is checked before anything is rendered (and, for `report`, before anything
is computed): a --site that holds files we did not write, a --site that would swallow a run folder, a
--pdf without Chromium.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from report.errors import UserError
from report.publish import render
from report.store.loader import Problem


@dataclass(frozen=True)
class OutputOptions:
    site: Path | None = None
    shared_assets: bool = False
    single_file: Path | None = None
    pdf: Path | None = None
    chromium: str | None = None
    title: str | None = None
    force: bool = False


def check(options: OutputOptions, run_dirs: list[Path] = (), out: Path | None = None) -> None:
    """Refuse, before anything is computed or rendered, any output that could not be written or would destroy an
    input. `run_dirs`: the run folders read (build); `out`: the folder a run is about to be written into (report)."""
    from report.publish import pdf, site
    from report.store.files import check_writable_dir

    if options.site is not None:
        check_writable_dir(Path(options.site), "--site")
    for option, path in _outputs(options):
        if len(os.fsencode(Path(path).name)) > 255:
            raise UserError(f"{option} {path}: the name is longer than 255 bytes")
        check_writable_dir(Path(path).absolute().parent, option)  # temporary files are written beside the target
        _check_not_on_inputs(option, Path(path), [Path(d) for d in run_dirs], out)
    if options.site is not None:
        site.check_site_folder(Path(options.site), options.force)
        root = Path(options.site).resolve()
        for option, path in _outputs(options):
            if option != "--site" and root in Path(path).resolve().parents:
                raise UserError(f"{option} {path} is inside --site {options.site}, which every build replaces whole")
    for option, path in (("--single-file", options.single_file), ("--pdf", options.pdf)):
        if path is not None and Path(path).is_dir():
            raise UserError(f"{option} {path} is a folder; give a file name")
    if options.pdf is not None:
        pdf.find_chromium(options.chromium)


def _outputs(options: OutputOptions) -> list[tuple[str, Path]]:
    return [(option, Path(path)) for option, path in (("--site", options.site), ("--single-file", options.single_file),
                                                      ("--pdf", options.pdf)) if path is not None]


def _check_not_on_inputs(option: str, path: Path, run_dirs: list[Path], out: Path | None) -> None:
    """No output on, inside or (a site) around a run folder, the working folder, or the --out a run writes into;
    paths are compared after following links, so a link cannot smuggle an output into a run folder."""
    target = path.resolve()
    for run_dir in run_dirs:
        resolved = run_dir.resolve()
        if target == resolved or resolved in target.parents:
            raise UserError(f"{option} {path} lies in the run folder {run_dir}; writing it would overwrite the "
                            "run's results: write the report outside the run folder")
        if option == "--site" and target in resolved.parents:
            raise UserError(f"--site {path} holds the run folder {run_dir}; building would replace it")
    if option == "--site" and (target == Path.cwd().resolve() or target in Path.cwd().resolve().parents):
        raise UserError(f"--site {path} is the folder you are working in (or holds it), and a build replaces the "
                        "site folder whole: give a folder of its own, e.g. --site site")
    if out is not None:
        out_dir = Path(out).resolve()
        if target == out_dir or target in out_dir.parents:
            raise UserError(f"{option} {path} would replace or hold --out {out}, where the run's results are written")
        if out_dir in target.parents:
            first = out_dir / target.relative_to(out_dir).parts[0]
            if target != first or (first / "manifest.json").exists():  # run folders are --out's subfolders
                raise UserError(f"{option} {path} lies in {first}, a run folder of --out {out} (or where one is "
                                "made); write the report outside it")


def build(run_dirs: list[Path], options: OutputOptions) -> tuple[list[str], list[Problem]]:
    """Write every asked-for form; returns ("report: PATH" lines, damaged results shown as missing sections)."""
    from report.publish import pdf, single_file, site
    from report.store.loader import load_manifest

    for run_dir in run_dirs:
        load_manifest(Path(run_dir))  # "not a run folder" first: it explains the rest
    check(options, run_dirs)
    collected = render.collect(run_dirs, options.title)
    written = []
    if options.site is not None:
        index = site.write_site(site.render_site(collected, options.shared_assets), Path(options.site), options.force)
        written.append(f"report: {index}")
    if options.single_file is not None:
        written.append(f"single file: {single_file.write_single(collected, Path(options.single_file))}")
    if options.pdf is not None:
        written.append(f"pdf: {pdf.write_pdf(collected, Path(options.pdf), options.chromium)}")
    return written, collected.problems
