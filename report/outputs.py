"""The output forms of `build` and `report`: a site folder (default), one HTML file, a PDF; any together.

Everything that can be refused is checked before anything is rendered (and, for `report`, before anything
is computed): a --site that holds files we did not write, a --site that would swallow a run folder, a
--pdf without Chromium.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from report import render
from report.errors import UserError
from report.loader import Problem


@dataclass(frozen=True)
class OutputOptions:
    site: Path | None = None
    shared_assets: bool = False
    single_file: Path | None = None
    pdf: Path | None = None
    chromium: str | None = None
    title: str | None = None
    force: bool = False


def check(options: OutputOptions, run_dirs: list[Path] = ()) -> None:
    from report import pdf, site
    from report.files import check_writable_dir

    if options.site is not None:
        check_writable_dir(Path(options.site), "--site")
    for option, path in (("--site", options.site), ("--single-file", options.single_file), ("--pdf", options.pdf)):
        if path is None:
            continue
        if len(os.fsencode(Path(path).name)) > 255:
            raise UserError(f"{option} {path}: the name is longer than 255 bytes")
        check_writable_dir(Path(path).absolute().parent, option)  # temporary files are written beside the target
    if options.site is not None:
        site.check_site_folder(Path(options.site), options.force)
        root = Path(options.site).resolve()
        for run_dir in run_dirs:
            if Path(run_dir).resolve() == root or root in Path(run_dir).resolve().parents:
                raise UserError(f"--site {options.site} holds the run folder {run_dir}; building would replace it")
    for option, path in (("--single-file", options.single_file), ("--pdf", options.pdf)):
        if path is not None and Path(path).is_dir():
            raise UserError(f"{option} {path} is a folder; give a file name")
    if options.pdf is not None:
        pdf.find_chromium(options.chromium)


def build(run_dirs: list[Path], options: OutputOptions) -> tuple[list[str], list[Problem]]:
    """Write every asked-for form; returns ("report: PATH" lines, damaged results shown as missing sections)."""
    from report import pdf, single_file, site

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
